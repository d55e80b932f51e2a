/* bilo-compare: plots with gnuplot when it is installed. OUT/plot.gp draws every task metric
   against the outer step and against the estimator's own wall time (total_seconds: it survives
   resumes and leaves out metric evaluation), one line per method (the first seed's log), and
   the hypergradient error against the budget where an exact reference exists; each figure as
   SVG and PNG. gnuplot runs by fork + exec inside OUT, so no path goes through a shell. */
#include "compare.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* gnuplot's path from PATH, false when absent. */
static bool find_gnuplot(char *path, size_t size)
{
    const char *env = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", env ? env : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, size, "%s/gnuplot", *d ? d : ".");
        if (access(path, X_OK) == 0) return true;
    }
    return false;
}

/* 1-based column of `name` in the CSV header line, 0 when absent. */
static int column_of(const char *header, const char *name)
{
    size_t len = strlen(name);
    int col = 1;
    for (const char *p = header; *p; col++) {
        const char *end = strpbrk(p, ",\n");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && !strncmp(p, name, len)) return col;
        if (!end || *end == '\n') break;
        p = end + 1;
    }
    return 0;
}

static bool read_header(const cmp_session *s, int m, char *header, size_t size)
{
    char base[CMP_PATH_LEN], csv[CMP_PATH_LEN + 8];
    cmp_file_base(s, m, 0, base, sizeof base);
    snprintf(csv, sizeof csv, "%s.csv", base);
    FILE *f = fopen(csv, "r");
    bool ok = f && fgets(header, (int)size, f);
    if (f) fclose(f);
    return ok;
}

/* A figure drawn to name.svg, then redrawn to name.png with the same plot command. */
static void begin_figure(FILE *gp, const char *name, const char *title, const char *xlabel,
                         const char *ylabel)
{
    fprintf(gp, "\nset title '%s'\nset xlabel '%s'\nset ylabel '%s'\n", title, xlabel, ylabel);
    fprintf(gp, "set terminal svg size 900,600 dynamic noenhanced\nset output '%s.svg'\nplot ", name);
}

static void end_figure(FILE *gp, const char *name)
{
    fprintf(gp, "\nset terminal @png_terminal size 900,600 noenhanced\nset output '%s.png'\nreplot\n"
                "set output\n", name);
}

static void metric_figure(FILE *gp, const cmp_session *s, int k, bool vs_time)
{
    char name[2 * CMP_NAME_LEN], title[3 * CMP_NAME_LEN];
    const char *metric = s->metric_names[k];
    snprintf(name, sizeof name, "%s_vs_%s", metric, vs_time ? "time" : "step");
    snprintf(title, sizeof title, "%s: %s", s->cfg->task, metric);
    begin_figure(gp, name, title, vs_time ? "estimator wall time (s)" : "outer step", metric);
    int drawn = 0;
    for (int m = 0; m < s->n_methods; m++) {
        char header[4096], base[CMP_PATH_LEN];
        if (!read_header(s, m, header, sizeof header)) continue;
        int x = column_of(header, vs_time ? "total_seconds" : "step");
        int y = column_of(header, metric);
        if (!x || !y) continue;
        cmp_file_base(s, m, 0, base, sizeof base);
        fprintf(gp, "%s'%s.csv' using %d:%d with lines lw 2 title '%s'", drawn++ ? ", " : "",
                strrchr(base, '/') + 1, x, y, s->methods[m]);
    }
    if (!drawn) fprintf(gp, "NaN notitle");
    end_figure(gp, name);
}

static void budget_figure(FILE *gp, const cmp_session *s)
{
    fprintf(gp, "\nset logscale xy\n");
    begin_figure(gp, "budget_error", "relative hypergradient error at the start",
                 "budget (K for AID, Q for ES, T otherwise)", "||g - grad Phi|| / ||grad Phi||");
    for (int m = 0; m < s->n_methods; m++)
        fprintf(gp, "%s'budget.csv' using 3:(strcol(1) eq '%s' ? $5 : NaN) smooth unique "
                "with linespoints lw 2 title '%s'", m ? ", " : "", s->methods[m], s->methods[m]);
    end_figure(gp, "budget_error");
    fprintf(gp, "unset logscale\n");
}

static int write_script(const cmp_session *s, const char *path)
{
    FILE *gp = fopen(path, "w");
    if (!gp) return -1;
    fprintf(gp, "# bilo-compare plots: run 'gnuplot plot.gp' in this folder\n"
                "set datafile separator ','\nset key outside right\nset grid\n"
                "png_terminal = strstrt(GPVAL_TERMINALS, 'pngcairo') > 0 ? 'pngcairo' : 'png'\n");
    for (int k = 0; k < s->n_metrics; k++)
        for (int vs_time = 0; vs_time < 2; vs_time++) metric_figure(gp, s, k, vs_time);
    if (s->has_exact) budget_figure(gp, s);
    return fclose(gp) == 0 ? 0 : -1;
}

/* gnuplot plot.gp inside dir, its output to plot.log; true when it exits with 0. */
static bool run_gnuplot(const char *gnuplot, const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        int log = chdir(dir) == 0 ? open("plot.log", O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
        if (log >= 0 && dup2(log, STDOUT_FILENO) >= 0 && dup2(log, STDERR_FILENO) >= 0)
            execl(gnuplot, "gnuplot", "plot.gp", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) continue;
    return pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void cmp_plot(const cmp_session *s, char *footer, size_t size)
{
    const char *out = s->cfg->out;
    char gnuplot[CMP_PATH_LEN], script[CMP_PATH_LEN + 16];
    snprintf(script, sizeof script, "%s/plot.gp", out);
    if (!find_gnuplot(gnuplot, sizeof gnuplot)) {
        snprintf(footer, size, "gnuplot not found: CSV only (%s/*.csv)", out);
        return;
    }
    if (write_script(s, script) < 0 || !run_gnuplot(gnuplot, out)) {
        snprintf(footer, size, "gnuplot failed (see %s/plot.log): CSV only (%s/*.csv)", out, out);
        return;
    }
    int n = snprintf(footer, size, "plots: %s/{", out);
    for (int k = 0; k < s->n_metrics && n > 0 && (size_t)n < size; k++)
        n += snprintf(footer + n, size - (size_t)n, "%s%s", k ? "," : "", s->metric_names[k]);
    if (n > 0 && (size_t)n < size)
        snprintf(footer + n, size - (size_t)n, "}_vs_{step,time}.{svg,png}%s (script %s)",
                 s->has_exact ? ", budget_error.{svg,png}" : "", script);
}
