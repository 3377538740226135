/* config.c — the query cluster's configuration (parsed from JSON text, checked field by
 * field), the partition plan, and the date, parameter and filter helpers the core and
 * the data module share. No files: the driver reads the text and says whether a folder
 * exists. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "query.h"

const char *const q_param_names[Q_NPARAMS] = {"PM2.5", "PM10", "OZONE", "NO2", "CO", "SO2"};

int q_param_find(const char *name)
{
	for (int i = 0; i < Q_NPARAMS; i++)
		if (!strcmp(name, q_param_names[i]))
			return i;
	return -1;
}

const char *q_role_name(q_role r)
{
	return r == Q_LEADER ? "leader" : r == Q_TEAM_LEADER ? "team_leader" : "worker";
}

const char *q_strategy_name(q_strategy s)
{
	return s == Q_STRICT ? "strict" : s == Q_WEIGHTED ? "weighted" : "hybrid";
}

/* ---- dates (proleptic Gregorian, days since 1970-01-01) ---- */

int32_t q_days(int y, int m, int d)
{
	y -= m <= 2;
	int era = (y >= 0 ? y : y - 399) / 400;
	int yoe = y - era * 400;
	int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void q_civil(int32_t days, int *y, int *m, int *d)
{
	int32_t z = days + 719468;
	int era = (z >= 0 ? z : z - 146096) / 146097;
	int doe = z - era * 146097;
	int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = yoe + era * 400 + (*m <= 2);
}

static bool digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

static bool valid_date(int y, int m, int d)
{
	if (y < 1970 || y > 2100 || m < 1 || m > 12 || d < 1)
		return false;
	int32_t a = q_days(y, m, d);
	int yy, mm, dd;
	q_civil(a, &yy, &mm, &dd);
	return yy == y && mm == m && dd == d;
}

bool q_parse_day(const char *s, int32_t *days)
{
	int y, m, d;
	if (strlen(s) != 8 || !digits(s, 4, &y) || !digits(s + 4, 2, &m) || !digits(s + 6, 2, &d) ||
	    !valid_date(y, m, d))
		return false;
	*days = q_days(y, m, d);
	return true;
}

bool q_parse_time(const char *s, int32_t *minute)
{
	size_t n = strlen(s);
	int y, m, d, hh = 0, mi = 0;
	if (n == 8) {
		int32_t days;
		if (!q_parse_day(s, &days))
			return false;
		*minute = days * 1440;
		return true;
	}
	if ((n != 10 && n != 16) || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &m) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || !valid_date(y, m, d))
		return false;
	if (n == 16 && (s[10] != 'T' || !digits(s + 11, 2, &hh) || s[13] != ':' ||
	                !digits(s + 14, 2, &mi) || hh > 23 || mi > 59))
		return false;
	*minute = q_days(y, m, d) * 1440 + hh * 60 + mi;
	return true;
}

void q_format_time(int32_t minute, char out[20])
{
	int32_t days = minute >= 0 ? minute / 1440 : -((-minute + 1439) / 1440);
	int rest = minute - days * 1440, y, m, d;
	q_civil(days, &y, &m, &d);
	char b[64];
	snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d", y, m, d, rest / 60, rest % 60);
	memcpy(out, b, 19);
	out[19] = '\0';
}

static const double pow10_[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

int q_format_number(char *out, double v, uint8_t scale)
{
	if (scale >= 16 || !(fabs(v) < 1e15))
		return snprintf(out, 32, "%.17g", v);
	/* v is the double nearest m / 10^scale, so rounding v * 10^scale gives m back */
	long long m = llround(v * pow10_[scale]);
	char digits[24];
	int n = 0;
	unsigned long long a = m < 0 ? (unsigned long long)-m : (unsigned long long)m;
	do {
		digits[n++] = (char)('0' + a % 10);
		a /= 10;
	} while (a || n <= scale);
	int len = 0;
	if (m < 0 || (m == 0 && signbit(v)))
		out[len++] = '-';
	for (int i = n - 1; i >= 0; i--) {
		out[len++] = digits[i];
		if (i == scale && scale)
			out[len++] = '.';
	}
	out[len] = '\0';
	return len;
}

void q_filter_all(q_filter *f, int param)
{
	memset(f, 0, sizeof *f);
	f->param = (uint8_t)param;
	f->vmin = -INFINITY;
	f->vmax = INFINITY;
	f->t_from = INT32_MIN;
	f->t_to = INT32_MAX;
	f->lat_min = f->lon_min = -INFINITY;
	f->lat_max = f->lon_max = INFINITY;
}

bool q_filter_match(const q_filter *f, const q_rec *r)
{
	return r->param == f->param && r->value >= f->vmin && r->value <= f->vmax &&
	       r->minute >= f->t_from && r->minute <= f->t_to && r->lat >= f->lat_min &&
	       r->lat <= f->lat_max && r->lon >= f->lon_min && r->lon <= f->lon_max;
}

/* ---- the configuration ---- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return RN_EINVAL;
}

int q_proc_find(const q_config *c, const char *id)
{
	for (int i = 0; i < c->nprocs; i++)
		if (!strcmp(c->procs[i].id, id))
			return i;
	return -1;
}

/* A positive integer setting of "strategies" (or "heartbeat"), within [lo, hi]. */
static int uint_field(json_t *obj, const char *section, const char *name, unsigned lo, unsigned hi,
                      unsigned *out, char *err, size_t errlen)
{
	json_t *v = obj ? json_object_get(obj, name) : NULL;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return fail(err, errlen, "%s.%s: wants a whole number from %u to %u", section, name,
		            lo, hi);
	*out = (unsigned)json_integer_value(v);
	return 0;
}

static bool find_cycle(const q_config *c, int v, int *state, int *stack, int depth, char *err,
                       size_t errlen)
{
	state[v] = 1;
	stack[depth] = v;
	for (int k = 0; k < c->procs[v].nneigh; k++) {
		int w = c->procs[v].neigh[k];
		if (state[w] == 1) {
			char path[512] = "";
			size_t len = 0;
			int from = 0;
			while (stack[from] != w)
				from++;
			for (int i = from; i <= depth; i++)
				len += (size_t)snprintf(path + len,
				                        len < sizeof path ? sizeof path - len : 0,
				                        "%s -> ", c->procs[stack[i]].id);
			snprintf(path + len, len < sizeof path ? sizeof path - len : 0, "%s",
			         c->procs[w].id);
			fail(err, errlen, "processes.%s.neighbors: a cycle in the tree (%s)",
			     c->procs[v].id, path);
			return true;
		}
		if (state[w] == 0 && find_cycle(c, w, state, stack, depth + 1, err, errlen))
			return true;
	}
	state[v] = 2;
	return false;
}

static int parse_procs(json_t *procs, q_config *c, char *err, size_t errlen)
{
	if (!json_is_object(procs) || json_object_size(procs) == 0)
		return fail(err, errlen, "processes: wants an object of processes by name");
	if (json_object_size(procs) > Q_MAX_PROCS)
		return fail(err, errlen, "processes: at most %d", Q_MAX_PROCS);
	const char *key;
	json_t *p;
	json_object_foreach(procs, key, p)
	{
		q_proc *q = &c->procs[c->nprocs++];
		memset(q, 0, sizeof *q);
		if (!json_is_object(p))
			return fail(err, errlen, "processes.%s: wants an object", key);
		json_t *id = json_object_get(p, "id");
		const char *name = id ? json_string_value(id) : key;
		if (!name || !*name || strlen(name) >= Q_NAME_MAX)
			return fail(err, errlen,
			            "processes.%s.id: wants a name of 1 to %d characters", key,
			            Q_NAME_MAX - 1);
		if (strcmp(name, key) != 0)
			return fail(err, errlen,
			            "processes.%s.id: is \"%s\", not the process's name", key,
			            name);
		strcpy(q->id, name);
		const char *role = json_string_value(json_object_get(p, "role"));
		if (!role)
			return fail(err, errlen, "processes.%s.role: missing", key);
		if (!strcmp(role, "leader"))
			q->role = Q_LEADER;
		else if (!strcmp(role, "team_leader"))
			q->role = Q_TEAM_LEADER;
		else if (!strcmp(role, "worker"))
			q->role = Q_WORKER;
		else
			return fail(
			    err, errlen,
			    "processes.%s.role: unknown role \"%s\" (leader, team_leader or "
			    "worker)",
			    key, role);
		const char *team = json_string_value(json_object_get(p, "team"));
		q->team = -1;
		for (int t = 0; team && t < c->nteams; t++)
			if (!strcmp(team, c->teams[t].name))
				q->team = t;
		if (q->team < 0)
			return fail(err, errlen,
			            "processes.%s.team: %s%s%s is not a team of data.teams", key,
			            team ? "\"" : "", team ? team : "missing", team ? "\"" : "");
		const char *host = json_string_value(json_object_get(p, "host"));
		if (!host || !*host || strlen(host) >= sizeof q->host)
			return fail(err, errlen, "processes.%s.host: wants an IPv4 address", key);
		strcpy(q->host, host);
		json_t *port = json_object_get(p, "port");
		if (!json_is_integer(port) || json_integer_value(port) < 1 ||
		    json_integer_value(port) > 64535)
			return fail(err, errlen, "processes.%s.port: wants a port from 1 to 64535",
			            key);
		q->port = (int)json_integer_value(port);
		q->http_port = q->port + 1000;
		json_t *hp = json_object_get(p, "http_port");
		if (hp) {
			if (!json_is_integer(hp) || json_integer_value(hp) < 1 ||
			    json_integer_value(hp) > 65535)
				return fail(err, errlen, "processes.%s.http_port: wants a port",
				            key);
			q->http_port = (int)json_integer_value(hp);
		}
	}
	/* neighbours, now that every name is known */
	json_object_foreach(procs, key, p)
	{
		q_proc *q = &c->procs[q_proc_find(c, key)];
		json_t *nb = json_object_get(p, "neighbors");
		if (!nb)
			continue;
		if (!json_is_array(nb) || json_array_size(nb) > Q_MAX_NEIGH)
			return fail(err, errlen,
			            "processes.%s.neighbors: wants a list of at most %d names", key,
			            Q_MAX_NEIGH);
		size_t i;
		json_t *e;
		json_array_foreach(nb, i, e)
		{
			const char *name = json_string_value(e);
			int w = name ? q_proc_find(c, name) : -1;
			if (w < 0)
				return fail(
				    err, errlen,
				    "processes.%s.neighbors: %s%s%s is not a process of this "
				    "config",
				    key, name ? "\"" : "", name ? name : "a non-string",
				    name ? "\"" : "");
			if (w == q - c->procs)
				return fail(err, errlen, "processes.%s.neighbors: names itself",
				            key);
			for (int k = 0; k < q->nneigh; k++)
				if (q->neigh[k] == w)
					return fail(err, errlen,
					            "processes.%s.neighbors: \"%s\" twice", key,
					            name);
			q->neigh[q->nneigh++] = w;
		}
	}
	return 0;
}

static int parse_teams(json_t *data, q_config *c, char *err, size_t errlen)
{
	if (!json_is_object(data))
		return fail(err, errlen, "data: wants an object with \"dir\" and \"teams\"");
	const char *dir = json_string_value(json_object_get(data, "dir"));
	if (!dir || !*dir || strlen(dir) >= sizeof c->data_dir)
		return fail(err, errlen, "data.dir: wants the path of the data folder");
	strcpy(c->data_dir, dir);
	json_t *teams = json_object_get(data, "teams");
	if (!json_is_object(teams) || json_object_size(teams) == 0 ||
	    json_object_size(teams) > Q_MAX_TEAMS)
		return fail(err, errlen,
		            "data.teams: wants an object of 1 to %d teams, each [\"YYYYMMDD\", "
		            "\"YYYYMMDD\"]",
		            Q_MAX_TEAMS);
	const char *name;
	json_t *r;
	json_object_foreach(teams, name, r)
	{
		q_team *t = &c->teams[c->nteams];
		if (!*name || strlen(name) >= Q_NAME_MAX)
			return fail(err, errlen, "data.teams: a team name of 1 to %d characters",
			            Q_NAME_MAX - 1);
		strcpy(t->name, name);
		const char *lo = json_string_value(json_array_get(r, 0)),
		           *hi = json_string_value(json_array_get(r, 1));
		if (!json_is_array(r) || json_array_size(r) != 2 || !lo || !hi ||
		    !q_parse_day(lo, &t->day_lo) || !q_parse_day(hi, &t->day_hi) ||
		    t->day_lo > t->day_hi)
			return fail(
			    err, errlen,
			    "data.teams.%s: wants [\"YYYYMMDD\", \"YYYYMMDD\"], first not after "
			    "last",
			    name);
		for (int k = 0; k < c->nteams; k++)
			if (t->day_lo <= c->teams[k].day_hi && c->teams[k].day_lo <= t->day_hi)
				return fail(err, errlen,
				            "data.teams.%s: its dates overlap team %s's", name,
				            c->teams[k].name);
		c->nteams++;
	}
	return 0;
}

static void defaults(q_config *c)
{
	memset(c, 0, sizeof *c);
	c->strategy = Q_STRICT;
	c->chunk_size = 500;
	c->max_concurrent = 60;
	c->queue_max = 200;
	c->queue_timeout_ms = 2000;
	c->max_records = 2000;
	c->result_ttl_ms = 60000;
	c->max_results = 1024;
	c->hb_interval_ms = 500;
	c->hb_timeout_ms = 1500;
	c->call_timeout_ms = 2000;
	c->retries = 2;
	c->backoff_ms = 50;
	c->breaker_threshold = 2;
	c->leader = -1;
}

static int parse_doc(json_t *doc, q_config *c, bool (*dir_exists)(void *, const char *), void *ctx,
                     char *err, size_t errlen)
{
	static const char *const top[] = {"strategies", "data", "processes", "heartbeat"};
	const char *key;
	json_t *v;
	json_object_foreach(doc, key, v)
	{
		bool known = false;
		for (int i = 0; i < 4; i++)
			known |= !strcmp(key, top[i]);
		if (!known)
			return fail(err, errlen,
			            "%s: unknown section (strategies, data, processes, heartbeat)",
			            key);
	}
	json_t *s = json_object_get(doc, "strategies");
	if (s && !json_is_object(s))
		return fail(err, errlen, "strategies: wants an object");
	const char *fs = s ? json_string_value(json_object_get(s, "fairness_strategy")) : NULL;
	if (s && json_object_get(s, "fairness_strategy") && !fs)
		return fail(err, errlen, "strategies.fairness_strategy: wants a string");
	if (fs) {
		if (!strcmp(fs, "strict"))
			c->strategy = Q_STRICT;
		else if (!strcmp(fs, "weighted"))
			c->strategy = Q_WEIGHTED;
		else if (!strcmp(fs, "hybrid"))
			c->strategy = Q_HYBRID;
		else
			return fail(
			    err, errlen,
			    "strategies.fairness_strategy: unknown strategy \"%s\" (strict, "
			    "weighted or hybrid)",
			    fs);
	}
	json_t *hb = json_object_get(doc, "heartbeat");
	if (hb && !json_is_object(hb))
		return fail(err, errlen, "heartbeat: wants an object");
	int rc = 0;
	rc = rc ? rc
	        : uint_field(s, "strategies", "chunk_size", 1, 5000, &c->chunk_size, err, errlen);
	rc = rc ? rc
	        : uint_field(s, "strategies", "max_concurrent", 1, 100000, &c->max_concurrent, err,
	                     errlen);
	rc = rc ? rc
	        : uint_field(s, "strategies", "queue_max", 0, 100000, &c->queue_max, err, errlen);
	rc = rc ? rc
	        : uint_field(s, "strategies", "queue_timeout_ms", 1, 600000, &c->queue_timeout_ms,
	                     err, errlen);
	rc = rc ? rc
	        : uint_field(s, "strategies", "max_records", 1, Q_MAX_RECORDS, &c->max_records, err,
	                     errlen);
	rc = rc ? rc
	        : uint_field(s, "strategies", "result_ttl_ms", 100, 86400000, &c->result_ttl_ms,
	                     err, errlen);
	rc = rc ? rc
	        : uint_field(s, "strategies", "max_results", 1, 100000, &c->max_results, err,
	                     errlen);
	rc = rc ? rc
	        : uint_field(hb, "heartbeat", "interval_ms", 10, 60000, &c->hb_interval_ms, err,
	                     errlen);
	rc = rc ? rc
	        : uint_field(hb, "heartbeat", "timeout_ms", 20, 600000, &c->hb_timeout_ms, err,
	                     errlen);
	rc = rc ? rc
	        : uint_field(hb, "heartbeat", "call_timeout_ms", 10, 600000, &c->call_timeout_ms,
	                     err, errlen);
	rc = rc ? rc : uint_field(hb, "heartbeat", "retries", 0, 10, &c->retries, err, errlen);
	rc = rc ? rc
	        : uint_field(hb, "heartbeat", "backoff_ms", 1, 60000, &c->backoff_ms, err, errlen);
	rc = rc ? rc
	        : uint_field(hb, "heartbeat", "breaker_threshold", 1, 100, &c->breaker_threshold,
	                     err, errlen);
	if (rc)
		return rc;
	if (c->hb_timeout_ms <= c->hb_interval_ms)
		return fail(err, errlen, "heartbeat.timeout_ms: must be longer than interval_ms");
	if ((rc = parse_teams(json_object_get(doc, "data"), c, err, errlen)) != 0)
		return rc;
	if ((rc = parse_procs(json_object_get(doc, "processes"), c, err, errlen)) != 0)
		return rc;
	for (int i = 0; i < c->nprocs; i++)
		if (c->procs[i].role == Q_LEADER) {
			if (c->leader >= 0)
				return fail(
				    err, errlen,
				    "processes.%s.role: a second leader (%s is one); want exactly "
				    "one",
				    c->procs[i].id, c->procs[c->leader].id);
			c->leader = i;
		}
	if (c->leader < 0)
		return fail(err, errlen, "processes: no process has role \"leader\"");
	int state[Q_MAX_PROCS] = {0}, stack[Q_MAX_PROCS + 1];
	for (int i = 0; i < c->nprocs; i++)
		if (!state[i] && find_cycle(c, i, state, stack, 0, err, errlen))
			return RN_EINVAL;
	q_plan p;
	q_plan_build(c, &p);
	for (int i = 0; i < c->nprocs; i++)
		if (!(p.reach[c->leader] & (1u << i)))
			return fail(
			    err, errlen,
			    "processes.%s: not reachable from the leader %s through neighbors",
			    c->procs[i].id, c->procs[c->leader].id);
	for (int t = 0; t < c->nteams; t++) {
		bool any = false;
		for (int i = 0; i < c->nprocs; i++)
			any |= c->procs[i].team == t;
		if (!any)
			return fail(err, errlen, "data.teams.%s: no process is in this team",
			            c->teams[t].name);
	}
	if (p.n > Q_MAX_SLICES)
		return fail(err, errlen, "processes: more slices than %d", Q_MAX_SLICES);
	if (dir_exists && !dir_exists(ctx, c->data_dir))
		return fail(err, errlen,
		            "data.dir: no folder \"%s\" (run `ringnet data fetch --config FILE`)",
		            c->data_dir);
	return 0;
}

int q_config_parse(const char *text, size_t len, q_config *c,
                   bool (*dir_exists)(void *ctx, const char *path), void *ctx, char *err,
                   size_t errlen)
{
	defaults(c);
	json_error_t je;
	json_t *doc = json_loadb(text, len, 0, &je);
	if (!doc)
		return fail(err, errlen, "not JSON: %s (line %d, column %d)", je.text, je.line,
		            je.column);
	int rc = json_is_object(doc) ? parse_doc(doc, c, dir_exists, ctx, err, errlen)
	                             : fail(err, errlen, "wants a JSON object");
	json_decref(doc);
	return rc;
}

/* ---- the plan ---- */

static const unsigned weight_of[] = {[Q_LEADER] = 1, [Q_TEAM_LEADER] = 2, [Q_WORKER] = 3};

static uint32_t reach_from(const q_config *c, int v, uint32_t seen)
{
	seen |= 1u << v;
	for (int k = 0; k < c->procs[v].nneigh; k++)
		if (!(seen & (1u << c->procs[v].neigh[k])))
			seen = reach_from(c, c->procs[v].neigh[k], seen);
	return seen;
}

int q_plan_build(const q_config *c, q_plan *p)
{
	memset(p, 0, sizeof *p);
	for (int i = 0; i < c->nprocs; i++)
		p->reach[i] = reach_from(c, i, 0);
	for (int t = 0; t < c->nteams; t++) {
		/* the team's members: by role (leader, team leaders, workers), then config order */
		int mem[Q_MAX_PROCS], nm = 0;
		for (int r = Q_LEADER; r <= Q_WORKER; r++)
			for (int i = 0; i < c->nprocs; i++)
				if (c->procs[i].team == t && (int)c->procs[i].role == r)
					mem[nm++] = i;
		if (!nm)
			continue;
		unsigned wsum = 0;
		for (int k = 0; k < nm; k++)
			wsum += weight_of[c->procs[mem[k]].role];
		int32_t days = c->teams[t].day_hi - c->teams[t].day_lo + 1;
		/* largest remainder: floors first, then a day each to the largest remainders */
		int32_t share[Q_MAX_PROCS], given = 0;
		int64_t rem[Q_MAX_PROCS];
		for (int k = 0; k < nm; k++) {
			int64_t num = (int64_t)days * weight_of[c->procs[mem[k]].role];
			share[k] = (int32_t)(num / wsum);
			rem[k] = num % wsum;
			given += share[k];
		}
		while (given < days) {
			int best = 0;
			for (int k = 1; k < nm; k++)
				if (rem[k] > rem[best])
					best = k;
			share[best]++;
			rem[best] = -1;
			given++;
		}
		int32_t day = c->teams[t].day_lo;
		for (int k = 0; k < nm; k++) {
			if (!share[k])
				continue;
			if (p->n == Q_MAX_SLICES) {
				p->n++; /* the config check refuses it */
				return RN_EINVAL;
			}
			q_slice *s = &p->s[p->n++];
			s->team = t;
			s->day_lo = day;
			s->day_hi = day + share[k] - 1;
			s->owner = mem[k];
			s->copy = mem[(k + nm - 1) % nm];
			day += share[k];
		}
	}
	return 0;
}

uint64_t q_plan_held(const q_plan *p, int proc)
{
	uint64_t m = 0;
	for (int i = 0; i < p->n && i < Q_MAX_SLICES; i++)
		if (p->s[i].owner == proc || p->s[i].copy == proc)
			m |= 1ull << i;
	return m;
}

uint64_t q_plan_overlap(const q_plan *p, int32_t day_lo, int32_t day_hi)
{
	uint64_t m = 0;
	for (int i = 0; i < p->n && i < Q_MAX_SLICES; i++)
		if (p->s[i].day_lo <= day_hi && day_lo <= p->s[i].day_hi)
			m |= 1ull << i;
	return m;
}
