/* bilo-compare: the results table on stdout, one row per method, mean ± std over seeds. */
#include "compare.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { MAX_COLS = CMP_MAX_METRICS + 9, CELL = 64 };

typedef struct {
    char cell[CMP_MAX_METHODS + 1][MAX_COLS][CELL];
    int n_rows, n_cols;
} grid;

/* One numeric column: its title, how to read it from a result, its printf format. */
typedef struct {
    const char *title, *format;
    double (*get)(const cmp_result *r, int k);
    int k;
} column;

static double get_steps(const cmp_result *r, int k) { return (double)r->steps; }
static double get_metric(const cmp_result *r, int k) { return r->metrics[k]; }
static double get_hg(const cmp_result *r, int k) { return r->hg_error; }
static double get_seconds(const cmp_result *r, int k) { return r->cost.seconds; }
static double get_f(const cmp_result *r, int k) { return (double)r->cost.f_grads; }
static double get_g(const cmp_result *r, int k) { return (double)r->cost.g_grads; }
static double get_hvps(const cmp_result *r, int k) { return (double)r->cost.hvps; }
static double get_mib(const cmp_result *r, int k) { return (double)r->cost.peak_bytes / 1048576.0; }

static int columns_of(const cmp_session *s, column *cols)
{
    int n = 0;
    cols[n++] = (column){"steps", "%.0f", get_steps, 0};
    for (int k = 0; k < s->n_metrics; k++)
        cols[n++] = (column){s->metric_names[k], "%.4g", get_metric, k};
    if (s->has_exact) cols[n++] = (column){"hg rel err", "%.3g", get_hg, 0};
    cols[n++] = (column){"time s", "%.2f", get_seconds, 0};
    cols[n++] = (column){"f grads", "%.0f", get_f, 0};
    cols[n++] = (column){"g grads", "%.0f", get_g, 0};
    cols[n++] = (column){"HVPs", "%.0f", get_hvps, 0};
    cols[n++] = (column){"peak MiB", "%.1f", get_mib, 0};
    return n;
}

static bool counts(const cmp_result *r) { return r->status != CMP_FAILED; }

/* "value" for one seed, "mean ± std" (sample std) for several; "-" when no run counts. */
static void format_stat(const cmp_session *s, int m, const column *c, char *out)
{
    double sum = 0, sq = 0;
    int n = 0;
    for (int i = 0; i < s->cfg->seeds; i++) {
        const cmp_result *r = &s->results[m][i];
        if (!counts(r)) continue;
        double v = c->get(r, c->k);
        sum += v;
        sq += v * v;
        n++;
    }
    if (n == 0) {
        snprintf(out, CELL, "-");
        return;
    }
    double mean = sum / n, var = n > 1 ? fmax(0, (sq - n * mean * mean) / (n - 1)) : 0;
    int len = snprintf(out, CELL, c->format, mean);
    if (s->cfg->seeds == 1) return;
    len += snprintf(out + len, (size_t)(CELL - len), " ± ");
    snprintf(out + len, (size_t)(CELL - len), c->format, sqrt(var));
}

static const char *status_text(cmp_status st)
{
    static const char *const text[] = {"ok", "skipped (done)", "stopped (time budget)",
                                       "diverged", "FAILED"};
    return text[st];
}

/* The status when every seed agrees, else counts such as "2 ok, 1 diverged". */
static void format_status(const cmp_session *s, int m, char *out)
{
    int count[CMP_FAILED + 1] = {0};
    for (int i = 0; i < s->cfg->seeds; i++) count[s->results[m][i].status]++;
    out[0] = '\0';
    for (int st = 0, len = 0; st <= CMP_FAILED; st++) {
        if (!count[st]) continue;
        if (count[st] == s->cfg->seeds) len = snprintf(out, CELL, "%s", status_text(st));
        else len += snprintf(out + len, (size_t)(CELL - len), "%s%d %s", len ? ", " : "",
                             count[st], status_text(st));
    }
}

/* Terminal columns of a UTF-8 string ("±" is one). */
static int display_width(const char *s)
{
    int w = 0;
    for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void fill_grid(const cmp_session *s, grid *g)
{
    column cols[MAX_COLS];
    int n = columns_of(s, cols);
    g->n_cols = n + 2;
    g->n_rows = s->n_methods + 1;
    snprintf(g->cell[0][0], CELL, "method");
    snprintf(g->cell[0][1], CELL, "status");
    for (int c = 0; c < n; c++) snprintf(g->cell[0][c + 2], CELL, "%s", cols[c].title);
    for (int m = 0; m < s->n_methods; m++) {
        snprintf(g->cell[m + 1][0], CELL, "%s", s->methods[m]);
        format_status(s, m, g->cell[m + 1][1]);
        for (int c = 0; c < n; c++) format_stat(s, m, &cols[c], g->cell[m + 1][c + 2]);
    }
}

static const char *rule(int width)
{
    static char line[MAX_COLS * (CELL + 2) + 1];
    memset(line, '-', (size_t)width);
    line[width] = '\0';
    return line;
}

static void print_grid(const grid *g)
{
    int width[MAX_COLS] = {0}, total = 0;
    for (int r = 0; r < g->n_rows; r++)
        for (int c = 0; c < g->n_cols; c++)
            if (display_width(g->cell[r][c]) > width[c]) width[c] = display_width(g->cell[r][c]);
    for (int c = 0; c < g->n_cols; c++) total += width[c] + (c ? 2 : 0);
    for (int r = 0; r < g->n_rows; r++) {
        for (int c = 0; c < g->n_cols; c++) {
            int pad = width[c] - display_width(g->cell[r][c]);
            /* names left-aligned, numbers right-aligned */
            if (c < 2) printf("%s%s%*s", c ? "  " : "", g->cell[r][c], pad, "");
            else printf("  %*s%s", pad, "", g->cell[r][c]);
        }
        printf("\n");
        if (r == 0) printf("%s\n", rule(total));
    }
}

static void print_failures(const cmp_session *s)
{
    bool first = true;
    for (int m = 0; m < s->n_methods; m++)
        for (int i = 0; i < s->cfg->seeds; i++) {
            const cmp_result *r = &s->results[m][i];
            if (!*r->error) continue;
            printf("%s%s (seed %llu): %s\n", first ? "\n" : "", s->methods[m],
                   (unsigned long long)(s->cfg->seed + (uint64_t)i), r->error);
            first = false;
        }
}

void cmp_print_table(const cmp_session *s)
{
    static grid g;
    fill_grid(s, &g);
    printf("\n%s: %d method(s), %lld outer steps, %d seed(s) from %llu\n\n", s->cfg->task,
           s->n_methods, (long long)s->outer_steps, s->cfg->seeds,
           (unsigned long long)s->cfg->seed);
    print_grid(&g);
    printf("\ntime s: estimator wall time, metrics excluded; peak MiB: bilo's allocator peak "
           "during the steps, task data included\n");
    if (s->has_exact)
        printf("hg rel err: ‖ĝ − ∇Φ‖/‖∇Φ‖ at (x₀, y*(x₀)) with each method's settings; "
               "over budgets: budget.csv\n");
    print_failures(s);
}
