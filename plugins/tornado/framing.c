/*
 * framing.c: floor 1 (calls nothing of the engine): strict request framing
 * on the HTTP sockets the engine serves (--http-socket, --http11-socket,
 * --https-socket).
 *
 * uWSGI's HTTP parser is lenient where leniency is a hole: it frames a body
 * by the first Content-Length it can read ("+33" reads as 0, "4, 33" as 4),
 * ignores Transfer-Encoding, folds obs-fold lines into the previous header,
 * accepts bare LF inside the head and copies the whole rest of the request
 * line into SERVER_PROTOCOL (so "HTTP/1.1\nHost: x" became the status line
 * of the response). On a kept-alive connection each of these lets a body be
 * read as the next request (request smuggling, RFC 9112 11.2).
 *
 * The engine does not rewrite the parser: once it has read a complete head,
 * tw_http_check_head() checks the raw bytes still in the parser's buffer (in
 * one pass, no allocation) and rejects what RFC 9112 says must be rejected,
 * before routing or the app see the request. The parser changed one thing
 * in place: header names are upper-cased with '-' made '_', which the checks
 * allow for.
 *
 * This file only judges (it calls nothing of the engine): keepalive.c
 * answers a rejection and closes the connection.
 */
#include "tornado.h"

/* character classes of RFC 9110 5.6.2 (tchar) and 5.5 (field-vchar, obs-text) */
#define TW_TCHAR  1
#define TW_FVCHAR 2
#define TW_TARGET 4
static uint8_t tw_class[256];

void tw_framing_init(void) {
	int ch;
	for (ch = 0; ch < 256; ch++) {
		uint8_t k = 0;
		if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || strchr("!#$%&'*+-.^_`|~", ch)) k |= TW_TCHAR;
		/* VCHAR and obs-text; SP and HTAB inside a value are allowed separately */
		if ((ch > 0x20 && ch < 0x7f) || ch >= 0x80) k |= TW_FVCHAR | TW_TARGET;
		if (ch == 0) k = 0;
		tw_class[ch] = k;
	}
}

static int name_is(const char *name, size_t len, const char *upper, size_t upper_len) {
	return len == upper_len && !memcmp(name, upper, len);
}

/* case-insensitive comparison of a value with a lower-case token */
static int token_is(const char *v, size_t len, const char *lower, size_t lower_len) {
	size_t i;
	if (len != lower_len) return 0;
	for (i = 0; i < len; i++) {
		if (tolower((unsigned char) v[i]) != lower[i]) return 0;
	}
	return 1;
}

static void trim_ows(const char **v, size_t *len) {
	while (*len && (**v == ' ' || **v == '\t')) { (*v)++; (*len)--; }
	while (*len && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t')) (*len)--;
}

static struct tw_http_verdict reject(int status, const char *reason) {
	struct tw_http_verdict r = {.status = status, .reason = reason, .flags = 0};
	return r;
}

/*
 * Transfer-Encoding (RFC 9112 6.1), every field of it in order: counts the
 * codings and says whether the last one so far is chunked. -1 when a coding
 * follows chunked (the end of the body could not be found).
 */
static int add_transfer_codings(const char *v, size_t len, int *codings, int *chunked_last) {
	const char *end = v + len;
	while (v < end) {
		const char *comma = memchr(v, ',', end - v);
		const char *item = v;
		size_t item_len = (comma ? comma : end) - item;
		trim_ows(&item, &item_len);
		v = comma ? comma + 1 : end;
		if (!item_len) continue;
		if (*chunked_last) return -1;
		(*codings)++;
		*chunked_last = token_is(item, item_len, "chunked", 7);
	}
	return 0;
}

struct tw_http_verdict tw_http_check_head(const char *head, size_t len, int first_on_connection) {
	struct tw_http_verdict ok = {.status = 0, .reason = NULL, .flags = 0};
	const char *p = head;
	const char *end = head + len;
	int http11;

	/* the PROXY protocol v1 line uWSGI's parser skipped (--enable-proxy-protocol) */
	if (uwsgi.enable_proxy_protocol && len > 6 && !memcmp(p, "PROXY ", 6)) {
		/* a proxy sends it once, before the first request: later ones would
		 * let the client name its own address */
		if (!first_on_connection) return reject(400, "PROXY protocol line after the first request of a connection");
		const char *nl = memchr(p, '\n', len);
		if (!nl) return reject(400, "malformed PROXY protocol line");
		p = nl + 1;
	}

	/* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 3) */
	const char *m = p;
	while (p < end && (tw_class[(uint8_t) *p] & TW_TCHAR)) p++;
	if (p == m || p >= end || *p != ' ') return reject(400, "invalid request method (RFC 9112 3)");
	p++;
	const char *t = p;
	while (p < end && (tw_class[(uint8_t) *p] & TW_TARGET)) p++;
	if (p == t || p >= end || *p != ' ') return reject(400, "invalid request target (RFC 9112 3.2)");
	p++;
	if (end - p < 10 || memcmp(p, "HTTP/", 5) || !isdigit((uint8_t) p[5]) || p[6] != '.' || !isdigit((uint8_t) p[7]) || p[8] != '\r' || p[9] != '\n') {
		return reject(400, "invalid HTTP version or request line end (RFC 9112 2.3, 2.2)");
	}
	if (p[5] != '1') return reject(505, "only HTTP/1.0 and HTTP/1.1 are served here");
	if (p[7] != '0' && p[7] != '1') return reject(505, "only HTTP/1.0 and HTTP/1.1 are served here");
	http11 = p[7] == '1';
	p += 10;

	int content_lengths = 0, transfer_encodings = 0, hosts = 0, codings = 0, chunked_last = 0;
	const char *expect = NULL;
	size_t expect_len = 0;

	/* header fields, up to the empty line; uWSGI saw the head end in CRLF CRLF */
	for (;;) {
		if (end - p < 2) return reject(400, "incomplete request head");
		if (p[0] == '\r' && p[1] == '\n') break;
		/* field-line = field-name ":" OWS field-value OWS (RFC 9112 5) */
		if (*p == ' ' || *p == '\t') return reject(400, "obs-fold line folding (RFC 9112 5.2)");
		const char *name = p;
		while (p < end && (tw_class[(uint8_t) *p] & TW_TCHAR)) p++;
		if (p == name || p >= end || *p != ':') {
			if (p < end && (*p == ' ' || *p == '\t')) return reject(400, "whitespace between a field name and its colon (RFC 9112 5.1)");
			return reject(400, "invalid header field name (RFC 9110 5.1)");
		}
		size_t name_len = p - name;
		p++;
		const char *value = p;
		while (p < end && ((tw_class[(uint8_t) *p] & TW_FVCHAR) || *p == ' ' || *p == '\t')) p++;
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
			if (p < end && *p == '\n') return reject(400, "bare LF in the request head (RFC 9112 2.2)");
			if (p < end && *p == '\r') return reject(400, "bare CR in the request head (RFC 9112 2.2)");
			return reject(400, "NUL or control character in a header field (RFC 9110 5.5)");
		}
		size_t value_len = p - value;
		p += 2;
		/* uWSGI's parser skips only SP before a value: HTAB stays in it */
		int tab_first = 0;
		const char *v;
		for (v = value; v < value + value_len && (*v == ' ' || *v == '\t'); v++) {
			if (*v == '\t') tab_first = 1;
		}
		trim_ows(&value, &value_len);

		/* framing and the fields the engine acts on (names as the parser left them) */
		switch (name_len) {
		case 4:
			if (name_is(name, name_len, "HOST", 4)) hosts++;
			break;
		case 6:
			if (name_is(name, name_len, "EXPECT", 6)) {
				expect = value;
				expect_len = value_len;
			}
			break;
		case 14:
			if (name_is(name, name_len, "CONTENT_LENGTH", 14)) {
				size_t i;
				if (++content_lengths > 1) return reject(400, "more than one Content-Length (RFC 9112 6.3)");
				/* uWSGI would read "<HTAB>33" as 0: the two must agree */
				if (!value_len || value_len > 18 || tab_first) return reject(400, "invalid Content-Length (RFC 9112 6.3)");
				for (i = 0; i < value_len; i++) {
					if (!isdigit((uint8_t) value[i])) return reject(400, "invalid Content-Length (RFC 9112 6.3)");
				}
			}
			break;
		case 17:
			if (name_is(name, name_len, "TRANSFER_ENCODING", 17)) {
				transfer_encodings++;
				if (add_transfer_codings(value, value_len, &codings, &chunked_last)) return reject(400, "a transfer coding after chunked (RFC 9112 6.1)");
			}
			break;
		}
	}
	if (p + 2 != end) return reject(400, "bytes after the end of the request head");

	if (transfer_encodings) {
		if (!http11) return reject(400, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)");
		if (content_lengths) return reject(400, "Transfer-Encoding together with Content-Length (RFC 9112 6.1)");
		/* the body's end cannot be found unless chunked is the final coding */
		if (!chunked_last) return reject(400, "chunked is not the final transfer coding (RFC 9112 6.1)");
		/* chunked is what the engine implements: "gzip, chunked" is not served */
		if (codings > 1) return reject(501, "a transfer coding other than chunked (RFC 9112 6.1)");
		ok.flags |= TW_REQ_CHUNKED;
	}
	if (http11 && hosts != 1) return reject(400, hosts ? "more than one Host (RFC 9112 3.2)" : "HTTP/1.1 request without Host (RFC 9112 3.2)");
	if (expect && http11) {
		if (!token_is(expect, expect_len, "100-continue", 12)) return reject(417, "unsupported expectation (RFC 9110 10.1.1)");
		ok.flags |= TW_REQ_EXPECT_CONTINUE;
	}
	return ok;
}
