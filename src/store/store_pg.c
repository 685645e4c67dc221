/* SPDX-License-Identifier: MIT */
/* store_pg.c: the PostgreSQL backend (libpq). Placeholder until the backend
 * lands: opening a postgresql:// catalogue is refused. */
#include "store_int.h"

enum ims_status store__pg_open(const char *url, const struct store_model_info *model,
                               unsigned flags, struct store **out, struct ims_error *err)
{
    (void)model;
    (void)flags;
    (void)out;
    char shown[512];
    store_catalogue_display(url, shown, sizeof(shown));
    return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                         "catalogue %s: the PostgreSQL backend is not built yet", shown);
}
