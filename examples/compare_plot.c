/* bilo-compare: plots with gnuplot when it is installed. OUT/plot.gp draws every task metric
   against the outer step and against the estimator's own wall time (total_seconds: it survives
   resumes and leaves out metric evaluation), one line per method (the first seed's log), the
   path of (y1, y2) where the task reports one (the coreset toy), and the hypergradient error
   against the budget where an exact reference exists; each figure as SVG and PNG.
   gnuplot runs by fork + exec inside OUT, so no path goes through a shell. */
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

/* The header of the method's (first seed's) CSV; false unless at least one row follows. */
static bool read_header(const cmp_session *s, int m, char *header, size_t size)
{
    char base[CMP_PATH_LEN], csv[CMP_PATH_LEN + 8], row[64];
    cmp_file_base(s, m, 0, base, sizeof base);
    snprintf(csv, sizeof csv, "%s.csv", base);
    FILE *f = fopen(csv, "r");
    bool ok = f && fgets(header, (int)size, f) && fgets(row, sizeof row, f);
    if (f) fclose(f);
    return ok;
}

static bool any_log(const cmp_session *s)
{
    char header[4096];
    for (int m = 0; m < s->n_methods; m++)
        if (read_header(s, m, header, sizeof header)) return true;
    return false;
}

/* gnuplot cycles 8 colours: later methods get dashes so that no two lines look alike. */
static const char *style(int m)
{
    static char text[48];
    snprintf(text, sizeof text, "lc %d dt %d lw 2", m % 8 + 1, m / 8 + 1);
    return text;
}

/* A figure drawn to name.svg, then redrawn to name.png with the same plot command. */
static void begin_figure(FILE *gp, const char *name, const char *title, const char *xlabel,
                         const char *ylabel)
{
    fprintf(gp, "\nset title '%s'\nset xlabel '%s'\nset ylabel '%s'\n", title, xlabel, ylabel);
    fprintf(gp, "set terminal svg size 900,600 dynamic noenhanced\nset output '%s.svg'\nplot ",
            name);
}

static void end_figure(FILE *gp, const char *name)
{
    fprintf(gp, "\nset terminal @png_terminal size 900,600 noenhanced\nset output '%s.png'\n"
                "replot\n"
                "set output\n", name);
}

static void metric_figure(FILE *gp, const cmp_session *s, int k, bool vs_time)
{
    char name[2 * CMP_NAME_LEN], title[3 * CMP_NAME_LEN];
    const char *metric = s->metric_names[k];
    snprintf(name, sizeof name, "%s_vs_%s", metric, vs_time ? "time" : "step");
    snprintf(title, sizeof title, "%s: %s", s->cfg->task, metric);
    /* times span decades between methods: a log axis keeps the fast ones visible */
    fprintf(gp, "\n%s logscale x\n", vs_time ? "set" : "unset");
    begin_figure(gp, name, title, vs_time ? "estimator wall time (s, log)" : "outer step", metric);
    int drawn = 0;
    for (int m = 0; m < s->n_methods; m++) {
        char header[4096], base[CMP_PATH_LEN];
        if (!read_header(s, m, header, sizeof header)) continue;
        int x = column_of(header, vs_time ? "total_seconds" : "step");
        int y = column_of(header, metric);
        if (!x || !y) continue;
        cmp_file_base(s, m, 0, base, sizeof base);
        fprintf(gp, "%s'%s.csv' using %d:%d with lines %s title '%s'", drawn++ ? ", " : "",
                strrchr(base, '/') + 1, x, y, style(m), s->methods[m]);
    }
    end_figure(gp, name);
}

/* Tasks whose metrics include the point (y1, y2), such as BOME's coreset toy: each method's
   path in the plane. */
static bool has_plane(const cmp_session *s)
{
    int found = 0;
    for (int k = 0; k < s->n_metrics; k++)
        found += !strcmp(s->metric_names[k], "y1") || !strcmp(s->metric_names[k], "y2");
    return found == 2;
}

static void trajectory_figure(FILE *gp, const cmp_session *s)
{
    char title[2 * CMP_NAME_LEN];
    snprintf(title, sizeof title, "%s: trajectories of (y1, y2)", s->cfg->task);
    fprintf(gp, "\nunset logscale\n"); /* the time figures before it set a log x axis */
    begin_figure(gp, "trajectory", title, "y1", "y2");
    int drawn = 0;
    for (int m = 0; m < s->n_methods; m++) {
        char header[4096], base[CMP_PATH_LEN];
        if (!read_header(s, m, header, sizeof header)) continue;
        cmp_file_base(s, m, 0, base, sizeof base);
        fprintf(gp, "%s'%s.csv' using %d:%d with linespoints %s pt 7 ps 0.4 title '%s'",
                drawn++ ? ", " : "", strrchr(base, '/') + 1, column_of(header, "y1"),
                column_of(header, "y2"), style(m), s->methods[m]);
    }
    end_figure(gp, "trajectory");
}

static void budget_figure(FILE *gp, const cmp_session *s)
{
    fprintf(gp, "\nset logscale xy\n");
    begin_figure(gp, "budget_error", "relative hypergradient error at the start",
                 "budget (K for AID, Q for ES, T otherwise)", "||g - grad Phi|| / ||grad Phi||");
    for (int m = 0; m < s->n_methods; m++)
        fprintf(gp, "%s'budget.csv' using 3:(strcol(1) eq '%s' ? $5 : NaN) smooth unique "
                "with linespoints %s title '%s'", m ? ", " : "", s->methods[m], style(m),
                s->methods[m]);
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
    for (int k = 0; k < s->n_metrics && any_log(s); k++)
        for (int vs_time = 0; vs_time < 2; vs_time++) metric_figure(gp, s, k, vs_time);
    if (has_plane(s) && any_log(s)) trajectory_figure(gp, s);
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

static void describe_plots(const cmp_session *s, bool logs, char *footer, size_t size)
{
    const char *out = s->cfg->out;
    int n = snprintf(footer, size, "plots:");
    if (logs) {
        n += snprintf(footer + n, size - (size_t)n, " %s/{", out);
        for (int k = 0; k < s->n_metrics && (size_t)n < size; k++)
            n += snprintf(footer + n, size - (size_t)n, "%s%s", k ? "," : "", s->metric_names[k]);
        if ((size_t)n < size)
            n += snprintf(footer + n, size - (size_t)n, "}_vs_{step,time}.{svg,png}");
    }
    if (logs && has_plane(s) && (size_t)n < size)
        n += snprintf(footer + n, size - (size_t)n, ", %s/trajectory.{svg,png}", out);
    if (s->has_exact && (size_t)n < size)
        n += snprintf(footer + n, size - (size_t)n, "%s %s/budget_error.{svg,png}", logs ? "," : "",
                      out);
    if ((size_t)n < size) snprintf(footer + n, size - (size_t)n, " (script %s/plot.gp)", out);
}

void cmp_plot(const cmp_session *s, char *footer, size_t size)
{
    const char *out = s->cfg->out;
    char gnuplot[CMP_PATH_LEN], script[CMP_PATH_LEN + 16];
    snprintf(script, sizeof script, "%s/plot.gp", out);
    bool logs = any_log(s);
    if (!find_gnuplot(gnuplot, sizeof gnuplot)) {
        snprintf(footer, size, "gnuplot not found: CSV only (%s/*.csv)", out);
    } else if (!logs && !s->has_exact) {
        snprintf(footer, size, "no method logged a step: nothing to plot");
    } else if (write_script(s, script) < 0 || !run_gnuplot(gnuplot, out)) {
        snprintf(footer, size, "gnuplot failed (see %s/plot.log): CSV only (%s/*.csv)", out, out);
    } else {
        describe_plots(s, logs, footer, size);
    }
}
