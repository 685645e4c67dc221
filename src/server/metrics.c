/* SPDX-License-Identifier: MIT */
/*
 * metrics.c: request counters and latency histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * Each route has a fixed block of atomic counters: one per HTTP status of a
 * fixed list (plus "other"), and a latency histogram with fixed bucket
 * bounds. Observing is a few relaxed atomic increments, no lock, so metrics
 * cost nothing measurable on the request path; the renderer turns the
 * per-bucket counts into Prometheus's cumulative buckets. Values read while
 * requests run may be momentarily inconsistent across series, which
 * Prometheus tolerates.
 */
#include "server_int.h"

const double server__hist_bounds[SERVER_HIST_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
};
const int server__metric_statuses[SERVER_METRIC_STATUSES] = {
    200, 202, 204, 304, 400, 401, 404, 405, 409, 413, 415, 429, 500, 503, 504, 0,
};

int server__status_slot(int http_status)
{
    for (int i = 0; i < SERVER_METRIC_STATUSES - 1; i++)
        if (server__metric_statuses[i] == http_status)
            return i;
    return SERVER_METRIC_STATUSES - 1;
}

void server__metrics_observe(struct server_route_metrics *m, int http_status, double seconds)
{
    atomic_fetch_add_explicit(&m->count[server__status_slot(http_status)], 1,
                              memory_order_relaxed);
    int b = 0;
    while (b < SERVER_HIST_BUCKETS - 1 && seconds > server__hist_bounds[b])
        b++;
    atomic_fetch_add_explicit(&m->hist[b], 1, memory_order_relaxed);
    double us = seconds > 0 ? seconds * 1e6 : 0;
    atomic_fetch_add_explicit(&m->sum_us, (unsigned long)us, memory_order_relaxed);
}

enum ims_status server__metrics_render(struct ims_buf *out, const char *route,
                                       const struct server_route_metrics *m)
{
    enum ims_status st = IMS_OK;
    for (int i = 0; i < SERVER_METRIC_STATUSES && st == IMS_OK; i++) {
        unsigned long c = atomic_load_explicit(&m->count[i], memory_order_relaxed);
        if (c == 0)
            continue;
        if (server__metric_statuses[i])
            st = ims_buf_printf(out,
                                "imgsearch_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n",
                                route, server__metric_statuses[i], c);
        else
            st = ims_buf_printf(
                out, "imgsearch_http_requests_total{route=\"%s\",status=\"other\"} %lu\n", route,
                c);
    }
    unsigned long cum = 0;
    for (int b = 0; b < SERVER_HIST_BUCKETS && st == IMS_OK; b++) {
        cum += atomic_load_explicit(&m->hist[b], memory_order_relaxed);
        if (b < SERVER_HIST_BUCKETS - 1)
            st = ims_buf_printf(
                out, "imgsearch_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %lu\n",
                route, server__hist_bounds[b], cum);
        else
            st = ims_buf_printf(
                out,
                "imgsearch_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %lu\n",
                route, cum);
    }
    if (st == IMS_OK)
        st = ims_buf_printf(out, "imgsearch_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
                            route,
                            (double)atomic_load_explicit(&m->sum_us, memory_order_relaxed) / 1e6);
    if (st == IMS_OK)
        st = ims_buf_printf(out, "imgsearch_http_request_duration_seconds_count{route=\"%s\"} %lu\n",
                            route, cum);
    return st;
}
