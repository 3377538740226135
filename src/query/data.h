/* data.h — the query service's data: AirNow hourly CSV files (quoted, no header; columns
 * Latitude, Longitude, UTC time, Parameter, Value, Unit, RawConcentration, AQI, Category,
 * SiteName, AgencyName, AQSID, FullAQSID) loaded into a compact columnar form, one column
 * set per parameter sorted by time, so a query binary-searches its time range and scans
 * only that parameter's rows in it. Not a protocol core: it reads files.
 *
 * A row is kept when it has 13 fields, finite numbers for latitude, longitude and value,
 * a time "YYYY-MM-DDTHH:MM" and a known parameter (q_param_names); others are counted in
 * bad_rows, never fatal. An AQI that is not a whole number is kept as -1. */
#ifndef RN_QUERY_DATA_H
#define RN_QUERY_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "query.h"

typedef struct q_data q_data;

typedef struct {
	uint64_t rows, bad_rows, files, bytes;
	uint32_t days; /* day folders found */
} q_data_stats;

q_data *q_data_new(void);
void q_data_free(q_data *d);
/* Parses CSV text (any number of lines) and appends its rows. 0 or RN_ENOMEM. */
int q_data_add_csv(q_data *d, const char *text, size_t len);
/* Loads the hour files of every day in [day_lo, day_hi] whose bit is set in want (bit k
 * is day_lo + k; NULL: all of them), in time order, from dir/YYYYMMDD/ or
 * dir/data/YYYYMMDD/. A missing day folder is skipped (counted by stats.days). 0,
 * RN_ENOMEM, or RN_EIO when a file exists but cannot be read (err says which). */
int q_data_load_days(q_data *d, const char *dir, int32_t day_lo, int32_t day_hi,
                     const uint8_t *want, char *err, size_t errlen);
/* Sorts what was added out of time order; call after the last add, before scans. */
int q_data_finish(q_data *d);
/* Appends to out up to limit records of days [day_lo, day_hi] that match f; returns how
 * many match, counting no further than count_to (it stops scanning there). */
uint32_t q_data_scan(const q_data *d, int32_t day_lo, int32_t day_hi, const q_filter *f,
                     uint32_t limit, uint32_t count_to, q_rec *out);
void q_data_stats_get(const q_data *d, q_data_stats *s);
/* Bytes of memory the columns hold. */
size_t q_data_bytes(const q_data *d);

#endif
