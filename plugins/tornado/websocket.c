/*
 * websocket.c: floor 1 (calls event.c only): the engine's own websockets,
 * RFC 6455 server side, behind
 * uWSGI's Python API (uwsgi.websocket_handshake, websocket_recv,
 * websocket_recv_nb, websocket_send, websocket_send_binary) plus
 * uwsgi.websocket_recv_message() and uwsgi.websocket_close().
 *
 * uWSGI's own implementation (core/websockets.c) cannot serve async cores:
 * it keeps the message being reassembled from fragments in one process-wide
 * buffer, so two clients sending fragmented messages at once mix their
 * messages and crash the worker; it returns a fragment as if it were a
 * message, never validates a frame, always closes with an empty close frame
 * and echoes the client's list of subprotocols. Here every session's state
 * lives with its core (struct tw_ws, allocated the first time the core runs
 * a websocket, kept for the worker's life): the input buffer, the frame
 * being read, the message being reassembled (a growable buffer, freed when
 * the session ends), the ping clock.
 *
 * What is checked, with the RFC 6455 section for each rule (a violation
 * sends a close frame with the code and ends the session):
 *   - handshake (4.2.1): GET, Upgrade: websocket, Connection: upgrade,
 *     Sec-WebSocket-Version: 13, a key of 16 bytes in base64; the answer
 *     (4.2.2) carries Sec-WebSocket-Accept, the subprotocol the app chose
 *     (none when it chose none) and the app's own headers;
 *   - frames (5.2): client frames masked (5.3, else 1002), RSV bits 0 (no
 *     extension is negotiated, else 1002), opcodes 0-2 and 8-10 only (1002),
 *     the 64-bit length's top bit 0 (1002);
 *   - control frames (5.5): at most 125 bytes and never fragmented (1002);
 *     they may come between the fragments of a message (5.4);
 *   - fragmentation (5.4): a continuation needs a message in progress, a new
 *     text or binary frame needs none (1002);
 *   - text messages are UTF-8 (5.6, 8.1), checked as the bytes arrive, across
 *     fragments (1007);
 *   - --websocket-max-size (KiB, uWSGI's option) bounds a whole message
 *     (1009, 7.4.1);
 *   - ping (5.5.2) is answered with a pong carrying its payload; the server
 *     pings a connection idle for --websocket-ping-freq seconds while the app
 *     waits in websocket_recv()/recv_nb(), and ends the session when no pong
 *     came back within --websocket-pong-tolerance seconds (uWSGI's meaning);
 *   - close (5.5.1, 7.4): the client's code is echoed; a 1-byte payload, a
 *     code that may not be sent (0-999, 1004-1006, 1015-2999, 5000 and up;
 *     1012-1014, registered after the RFC, are accepted) or a reason that is
 *     not UTF-8 is a protocol error (1002). After the engine sends a close
 *     frame (the app's websocket_close(), a drain's 1001, a protocol error)
 *     it waits up to --tornado-websocket-close-timeout seconds for the
 *     client's close (7.1.1) before the connection is closed; the connection
 *     never goes back to HTTP keep-alive.
 *
 * A drain (signals.c calls tw_ws_drain() from the hub) marks every open
 * session "going away" and wakes those waiting for input: each sends 1001
 * from its own greenlet, so frames written by the app and by the engine
 * never interleave.
 *
 * Nothing is allocated per frame: frames are parsed out of the session's
 * input buffer, control payloads go to a 125-byte array, outgoing frames are
 * assembled in a per-session buffer. All of it runs in the request's own
 * greenlet; waits are tw_wait_fds() on the core's fd and timer.
 */
#include "tornado.h"

#define TW_WS_IN 4096           /* input buffer of a session */
#define TW_WS_CTL_MAX 125       /* RFC 6455 5.5 */
#define TW_WS_KEEP 65536        /* buffers larger than this are freed after each message */
#define TW_NS 1000000000ULL

#define WS_CONT   0x0
#define WS_TEXT   0x1
#define WS_BINARY 0x2
#define WS_CLOSE  0x8
#define WS_PING   0x9
#define WS_PONG   0xA

enum { WS_NONE = 0, WS_OPEN, WS_CLOSED };

struct tw_ws {
	int state;              /* WS_NONE: no session on this core's request */
	uint64_t request;       /* start_of_request of the request whose session this is */
	int going_away;         /* a drain asked for close 1001 */
	int waiting;            /* suspended in our own wait for input (a drain may end it) */
	int close_sent;
	int close_received;
	int ping_outstanding;
	uint64_t last_rx;       /* monotonic ns: last bytes received */
	uint64_t last_ping;     /* monotonic ns: last ping sent */

	/* input: bytes read from the connection, not parsed yet */
	size_t in_pos;
	size_t in_len;
	/* the frame being read */
	int have_header;
	uint8_t fin;
	uint8_t opcode;
	uint8_t mask[4];
	uint64_t len;
	uint64_t pos;
	uint8_t ctl[TW_WS_CTL_MAX];

	/* the message being reassembled */
	char *msg;
	size_t msg_len;
	size_t msg_cap;
	uint8_t msg_opcode;     /* WS_TEXT or WS_BINARY while a message is in progress, else 0 */
	uint8_t last_opcode;    /* of the last complete message */
	/* incremental UTF-8 check: continuation bytes expected, range of the next one */
	uint8_t u_need;
	uint8_t u_lo;
	uint8_t u_hi;

	/* outgoing frames */
	char *out;
	size_t out_cap;

	char in[TW_WS_IN];
};

/* ---- SHA-1 (FIPS 180-4), for Sec-WebSocket-Accept only ---- */

static uint32_t rol32(uint32_t x, int n) {
	return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t *p) {
	uint32_t w[80];
	int i;
	for (i = 0; i < 16; i++) w[i] = (uint32_t) p[4 * i] << 24 | (uint32_t) p[4 * i + 1] << 16 | (uint32_t) p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
	for (i = 0; i < 80; i++) {
		uint32_t f, k;
		if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
		else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
		else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
		else { f = b ^ c ^ d; k = 0xCA62C1D6; }
		uint32_t t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

/* digest of a message shorter than 120 bytes (a key and the GUID) */
static void sha1_short(const uint8_t *msg, size_t len, uint8_t out[20]) {
	uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
	uint8_t block[128] = {0};
	memcpy(block, msg, len);
	block[len] = 0x80;
	size_t total = len + 9 <= 64 ? 64 : 128;
	uint64_t bits = (uint64_t) len * 8;
	int i;
	for (i = 0; i < 8; i++) block[total - 1 - i] = (uint8_t) (bits >> (8 * i));
	sha1_block(h, block);
	if (total == 128) sha1_block(h, block + 64);
	for (i = 0; i < 20; i++) out[i] = (uint8_t) (h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ---- helpers ---- */

/* the 16-byte nonce in base64 (RFC 6455 4.1): 22 base64 characters and "==" */
static int key_ok(const char *key, size_t len) {
	size_t i;
	if (len != 24 || key[22] != '=' || key[23] != '=') return 0;
	for (i = 0; i < 22; i++) {
		char ch = key[i];
		if (!isalnum((unsigned char) ch) && ch != '+' && ch != '/') return 0;
	}
	/* the last character before the padding carries 2 bits: its other 4 are 0 */
	return strchr("AQgw", key[21]) != NULL;
}

/* does a comma-separated header value hold this token (case-insensitive)? */
static int has_token(const char *value, size_t len, const char *token) {
	size_t tlen = strlen(token);
	size_t i = 0;
	while (i < len) {
		while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) i++;
		size_t start = i;
		while (i < len && value[i] != ',') i++;
		size_t end = i;
		while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
		if (end - start == tlen && !strncasecmp(value + start, token, tlen)) return 1;
	}
	return 0;
}

/* an HTTP token (RFC 9110 5.6.2): header names, subprotocols */
static int is_token(const char *s, size_t len) {
	size_t i;
	if (!len) return 0;
	for (i = 0; i < len; i++) {
		unsigned char ch = s[i];
		if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch)) return 0;
	}
	return 1;
}

/* a header value: no CR, LF or NUL (no response splitting) */
static int is_field_value(const char *s, size_t len) {
	size_t i;
	for (i = 0; i < len; i++) {
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
	}
	return 1;
}

/* Feed bytes to the session's UTF-8 check: 0, or -1 at the first byte that
 * cannot be UTF-8 (overlongs, surrogates and code points past U+10FFFF included). */
static int utf8_feed(struct tw_ws *ws, const uint8_t *p, size_t n) {
	uint8_t need = ws->u_need, lo = ws->u_lo, hi = ws->u_hi;
	size_t i = 0;
	while (i < n) {
		if (!need) {
			/* ASCII, 8 bytes at a time */
			while (i + 8 <= n) {
				uint64_t word;
				memcpy(&word, p + i, 8);
				if (word & 0x8080808080808080ULL) break;
				i += 8;
			}
			if (i >= n) break;
		}
		uint8_t b = p[i++];
		if (need) {
			if (b < lo || b > hi) return -1;
			need--;
			lo = 0x80;
			hi = 0xbf;
			continue;
		}
		if (b < 0x80) continue;
		if (b < 0xc2) return -1;
		if (b < 0xe0) {
			need = 1;
			lo = 0x80;
			hi = 0xbf;
		}
		else if (b < 0xf0) {
			need = 2;
			lo = b == 0xe0 ? 0xa0 : 0x80;
			hi = b == 0xed ? 0x9f : 0xbf;
		}
		else if (b < 0xf5) {
			need = 3;
			lo = b == 0xf0 ? 0x90 : 0x80;
			hi = b == 0xf4 ? 0x8f : 0xbf;
		}
		else return -1;
	}
	ws->u_need = need;
	ws->u_lo = lo;
	ws->u_hi = hi;
	return 0;
}

static int utf8_valid(const char *s, size_t len) {
	struct tw_ws probe = {.u_need = 0};
	return utf8_feed(&probe, (const uint8_t *) s, len) == 0 && probe.u_need == 0;
}

/* close codes an endpoint may send (RFC 6455 7.4, IANA registry) */
static int close_code_ok(unsigned code) {
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

static uint64_t max_message(void) {
	return uwsgi.websockets_max_size * 1024;
}

static uint64_t close_deadline(void) {
	return tw_now_ns() + (uint64_t) (utornado.ws_close_timeout > 0 ? utornado.ws_close_timeout : 0) * TW_NS;
}

static void ws_log(struct tw_core *c, const char *what) {
	struct wsgi_request *wsgi_req = c->wsgi_req;
	uwsgi_log("[tornado] websocket \"%.*s\" (%.*s): %s\n", wsgi_req->uri_len, wsgi_req->uri,
		wsgi_req->remote_addr_len, wsgi_req->remote_addr, what);
}

/* make room for `more` bytes in a growable buffer */
static int grow(char **buf, size_t *cap, size_t used, size_t more) {
	if (used + more <= *cap) return 0;
	size_t want = *cap ? *cap : 1024;
	while (want < used + more) want *= 2;
	char *grown = realloc(*buf, want);
	if (!grown) return -1;
	*buf = grown;
	*cap = want;
	return 0;
}

static void release_big(struct tw_ws *ws) {
	if (ws->msg_cap > TW_WS_KEEP) {
		free(ws->msg);
		ws->msg = NULL;
		ws->msg_cap = 0;
	}
	if (ws->out_cap > TW_WS_KEEP) {
		free(ws->out);
		ws->out = NULL;
		ws->out_cap = 0;
	}
}

/* ---- I/O ---- */

/* Wait for the connection until `deadline` (monotonic ns, 0: none): 1 ready,
 * 0 timeout or woken by a drain, -1 error (a Python exception may be set). */
static int ws_wait(struct tw_core *c, struct tw_ws *ws, uint32_t events, uint64_t deadline) {
	if (events == TW_WRITE) {
		uint64_t limit = tw_deadline_after(uwsgi.socket_timeout);
		if (!deadline || (limit && limit < deadline)) deadline = limit;
	}
	ws->waiting = events == TW_READ;
	enum tw_wait_end end = tw_wait_fds(c, c->wsgi_req->fd, -1, events, deadline);
	ws->waiting = 0;
	return end == TW_WAIT_READY ? 1 : end == TW_WAIT_ERROR ? -1 : 0;
}

/* Write a whole buffer through the socket's protocol (TLS included). */
static int ws_write(struct tw_core *c, struct tw_ws *ws, char *buf, size_t len, uint64_t deadline) {
	struct wsgi_request *wsgi_req = c->wsgi_req;
	wsgi_req->write_pos = 0;
	for (;;) {
		int ret = wsgi_req->socket->proto_write(wsgi_req, buf, len);
		if (ret == UWSGI_OK) break;
		/* a wait that failed may leave an exception thrown into the
		 * greenlet (worker exit): it is the caller's to return, and nothing
		 * may wait after it */
		if (ret < 0 || ws_wait(c, ws, TW_WRITE, deadline) <= 0) {
			wsgi_req->write_errors++;
			return -1;
		}
	}
	wsgi_req->response_size += len;
	return 0;
}

/* Send one unfragmented frame (servers never mask, 5.1). */
static int ws_send_frame(struct tw_core *c, struct tw_ws *ws, uint8_t opcode, const char *payload, size_t len, uint64_t deadline) {
	size_t head = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
	if (grow(&ws->out, &ws->out_cap, 0, head + len)) {
		ws_log(c, "out of memory for an outgoing frame");
		return -1;
	}
	uint8_t *p = (uint8_t *) ws->out;
	p[0] = 0x80 | opcode;
	if (head == 2) p[1] = (uint8_t) len;
	else if (head == 4) {
		p[1] = 126;
		p[2] = (uint8_t) (len >> 8);
		p[3] = (uint8_t) len;
	}
	else {
		int i;
		p[1] = 127;
		for (i = 0; i < 8; i++) p[2 + i] = (uint8_t) ((uint64_t) len >> (56 - 8 * i));
	}
	if (len) memcpy(p + head, payload, len);
	int ret = ws_write(c, ws, ws->out, head + len, deadline);
	release_big(ws);
	if (ret) ws->state = WS_CLOSED;
	return ret;
}

static int ws_send_close(struct tw_core *c, struct tw_ws *ws, unsigned code, const char *reason, size_t reason_len, uint64_t deadline) {
	char payload[TW_WS_CTL_MAX];
	size_t len = 0;
	ws->close_sent = 1;
	if (code) {
		payload[0] = (char) (code >> 8);
		payload[1] = (char) code;
		if (reason_len > TW_WS_CTL_MAX - 2) reason_len = TW_WS_CTL_MAX - 2;
		if (reason_len) memcpy(payload + 2, reason, reason_len);
		len = 2 + reason_len;
	}
	return ws_send_frame(c, ws, WS_CLOSE, payload, len, deadline);
}

/* Read what the connection has into the input buffer: >0 bytes, 0 nothing
 * yet, -1 end of stream or error. */
static ssize_t ws_fill(struct tw_core *c, struct tw_ws *ws) {
	struct wsgi_request *wsgi_req = c->wsgi_req;
	/* what is left is at most a partial frame header */
	if (ws->in_pos) {
		memmove(ws->in, ws->in + ws->in_pos, ws->in_len - ws->in_pos);
		ws->in_len -= ws->in_pos;
		ws->in_pos = 0;
	}
	ssize_t n = wsgi_req->socket->proto_read_body(wsgi_req, ws->in + ws->in_len, sizeof(ws->in) - ws->in_len);
	if (n > 0) {
		ws->in_len += n;
		ws->last_rx = tw_now_ns();
		return n;
	}
	if (n < 0 && uwsgi_is_again()) return 0;
	return -1;
}

/* After our close frame on a failed connection: drop what the client still
 * sends until it closes or the close timeout passes, so the close frame is
 * read before the connection goes (closing a socket with unread input
 * resets it, and the client may lose the frame). */
static void ws_linger(struct tw_core *c, struct tw_ws *ws) {
	uint64_t deadline = close_deadline();
	for (;;) {
		ws->in_pos = ws->in_len = 0;
		ssize_t n = ws_fill(c, ws);
		if (n > 0) continue;
		if (n < 0) break;
		if (tw_now_ns() >= deadline) break;
		if (ws_wait(c, ws, TW_READ, deadline) < 0) break;
	}
	ws->in_pos = ws->in_len = 0;
}

/* Fail the connection (7.1.7): close frame with `code`, linger, done. */
static int ws_fail(struct tw_core *c, struct tw_ws *ws, unsigned code, const char *why) {
	char line[160];
	snprintf(line, sizeof(line), "%s: closing with %u", why, code);
	ws_log(c, line);
	if (!ws->close_sent && !ws_send_close(c, ws, code, NULL, 0, close_deadline())) ws_linger(c, ws);
	ws->state = WS_CLOSED;
	return -1;
}

/* ---- parsing ---- */

static int ws_control(struct tw_core *c, struct tw_ws *ws) {
	size_t len = (size_t) ws->len;
	if (ws->opcode == WS_PING) {
		if (ws->close_sent) return 0;
		return ws_send_frame(c, ws, WS_PONG, (char *) ws->ctl, len, 0) ? -1 : 0;
	}
	if (ws->opcode == WS_PONG) {
		ws->ping_outstanding = 0;
		return 0;
	}
	/* close */
	unsigned code = 0;
	if (len == 1) return ws_fail(c, ws, 1002, "a close frame of 1 byte");
	if (len >= 2) {
		code = (unsigned) ws->ctl[0] << 8 | ws->ctl[1];
		if (!close_code_ok(code)) return ws_fail(c, ws, 1002, "an invalid close code");
		if (!utf8_valid((char *) ws->ctl + 2, len - 2)) return ws_fail(c, ws, 1002, "a close reason that is not UTF-8");
	}
	ws->close_received = 1;
	/* echo the client's code (5.5.1) */
	if (!ws->close_sent) ws_send_close(c, ws, code, NULL, 0, close_deadline());
	ws->state = WS_CLOSED;
	return -1;
}

/* Check a frame header and take it: 0, or -1 when the connection failed. */
static int ws_header(struct tw_core *c, struct tw_ws *ws, const uint8_t *p, size_t head) {
	uint8_t opcode = p[0] & 0x0f;
	uint8_t len7 = p[1] & 0x7f;
	uint64_t len = len7;
	int i;
	if (p[0] & 0x70) return ws_fail(c, ws, 1002, "RSV bits set without an extension");
	if (!(p[1] & 0x80)) return ws_fail(c, ws, 1002, "an unmasked client frame");
	if (len7 == 126) len = (uint64_t) p[2] << 8 | p[3];
	else if (len7 == 127) {
		len = 0;
		for (i = 0; i < 8; i++) len = len << 8 | p[2 + i];
		if (len >> 63) return ws_fail(c, ws, 1002, "a frame length with its top bit set");
	}
	if (opcode >= WS_CLOSE) {
		if (opcode > WS_PONG) return ws_fail(c, ws, 1002, "a reserved control opcode");
		if (!(p[0] & 0x80)) return ws_fail(c, ws, 1002, "a fragmented control frame");
		if (len > TW_WS_CTL_MAX) return ws_fail(c, ws, 1002, "a control frame longer than 125 bytes");
	}
	else if (opcode == WS_CONT) {
		if (!ws->msg_opcode) return ws_fail(c, ws, 1002, "a continuation frame without a message to continue");
	}
	else if (opcode == WS_TEXT || opcode == WS_BINARY) {
		if (ws->msg_opcode) return ws_fail(c, ws, 1002, "a new message inside a fragmented one");
	}
	else return ws_fail(c, ws, 1002, "a reserved data opcode");

	if (opcode < WS_CLOSE) {
		if ((uint64_t) ws->msg_len + len > max_message()) return ws_fail(c, ws, 1009, "a message larger than --websocket-max-size");
		if (grow(&ws->msg, &ws->msg_cap, ws->msg_len, (size_t) len)) return ws_fail(c, ws, 1009, "no memory for a message");
		if (opcode != WS_CONT) {
			ws->msg_opcode = opcode;
			ws->u_need = 0;
		}
	}
	memcpy(ws->mask, p + head - 4, 4);
	ws->fin = p[0] >> 7;
	ws->opcode = opcode;
	ws->len = len;
	ws->pos = 0;
	ws->have_header = 1;
	return 0;
}

/* Parse what the input buffer holds: 1 a message is complete (ws->msg), 0
 * more bytes are needed, -1 the session is over. */
static int ws_parse(struct tw_core *c, struct tw_ws *ws) {
	for (;;) {
		size_t avail = ws->in_len - ws->in_pos;
		uint8_t *p = (uint8_t *) ws->in + ws->in_pos;
		if (!ws->have_header) {
			if (avail < 2) return 0;
			size_t head = 2 + ((p[1] & 0x7f) == 126 ? 2 : (p[1] & 0x7f) == 127 ? 8 : 0) + ((p[1] & 0x80) ? 4 : 0);
			if (avail < head) return 0;
			if (ws_header(c, ws, p, head)) return -1;
			ws->in_pos += head;
			continue;
		}
		uint64_t left = ws->len - ws->pos;
		size_t take = avail < left ? avail : (size_t) left;
		if (take) {
			int control = ws->opcode >= WS_CLOSE;
			uint8_t *dst = control ? ws->ctl + ws->pos : (uint8_t *) ws->msg + ws->msg_len;
			size_t i;
			size_t phase = (size_t) (ws->pos & 3);
			for (i = 0; i < take; i++) dst[i] = p[i] ^ ws->mask[(phase + i) & 3];
			if (!control) {
				if (ws->msg_opcode == WS_TEXT && utf8_feed(ws, dst, take)) return ws_fail(c, ws, 1007, "a text message that is not UTF-8");
				ws->msg_len += take;
			}
			ws->pos += take;
			ws->in_pos += take;
		}
		if (ws->pos < ws->len) return 0;
		/* the frame is complete */
		ws->have_header = 0;
		if (ws->opcode >= WS_CLOSE) {
			if (ws_control(c, ws)) return -1;
			continue;
		}
		if (!ws->fin) continue;
		if (ws->msg_opcode == WS_TEXT && ws->u_need) return ws_fail(c, ws, 1007, "a text message that ends inside a UTF-8 sequence");
		ws->last_opcode = ws->msg_opcode;
		ws->msg_opcode = 0;
		return 1;
	}
}

/* ---- session ---- */

/* The message the caller took (it copied ws->msg) is done with. */
static void ws_message_taken(struct tw_ws *ws) {
	ws->msg_len = 0;
	release_big(ws);
}

/*
 * Close from our side (7.1.2): send a close frame, then read until the
 * client's close (data it still sends is dropped), its end of stream or the
 * close timeout. The session is over afterwards.
 */
static void ws_close_handshake(struct tw_core *c, struct tw_ws *ws, unsigned code, const char *reason, size_t reason_len) {
	uint64_t deadline = close_deadline();
	if (ws->state != WS_OPEN) return;
	if (!ws->close_sent && ws_send_close(c, ws, code, reason, reason_len, deadline)) {
		ws->state = WS_CLOSED;
		return;
	}
	while (ws->state == WS_OPEN) {
		int ret = ws_parse(c, ws);
		if (ret == 1) {
			ws_message_taken(ws);
			continue;
		}
		if (ret < 0) break;
		ssize_t n = ws_fill(c, ws);
		if (n > 0) continue;
		if (n < 0 || tw_now_ns() >= deadline) break;
		if (ws_wait(c, ws, TW_READ, deadline) < 0) break;
	}
	ws->state = WS_CLOSED;
}

/* When the next ping is due, or the pong is late (0: no pings). */
static uint64_t ws_ping_deadline(struct tw_ws *ws) {
	if (uwsgi.websockets_ping_freq <= 0) return 0;
	if (ws->ping_outstanding) return ws->last_ping + (uint64_t) (uwsgi.websockets_pong_tolerance > 0 ? uwsgi.websockets_pong_tolerance : 0) * TW_NS + 1;
	uint64_t since = ws->last_rx > ws->last_ping ? ws->last_rx : ws->last_ping;
	return since + (uint64_t) uwsgi.websockets_ping_freq * TW_NS;
}

/* Ping an idle connection, give up on one whose pong is late: 0 or -1. */
static int ws_pingpong(struct tw_core *c, struct tw_ws *ws) {
	uint64_t due = ws_ping_deadline(ws);
	if (!due) return 0;
	uint64_t now = tw_now_ns();
	if (now < due) return 0;
	if (ws->ping_outstanding) {
		char line[96];
		snprintf(line, sizeof(line), "no PONG received in %d seconds", uwsgi.websockets_pong_tolerance);
		ws_log(c, line);
		ws->state = WS_CLOSED;
		return -1;
	}
	ws->last_ping = now;
	ws->ping_outstanding = 1;
	return ws_send_frame(c, ws, WS_PING, NULL, 0, 0);
}

/*
 * The next message: 1 it is in ws->msg (the caller calls ws_message_taken()),
 * 0 none yet (nb only), -1 the session is over (a Python exception may be set
 * when one was thrown into the waiting greenlet).
 */
static int ws_receive(struct tw_core *c, struct tw_ws *ws, int nb) {
	for (;;) {
		if (ws->state != WS_OPEN) return -1;
		if (ws->going_away) {
			ws_close_handshake(c, ws, 1001, "going away", 10);
			return -1;
		}
		int ret = ws_parse(c, ws);
		if (ret) return ret;
		ssize_t n = ws_fill(c, ws);
		if (n > 0) continue;
		if (n < 0) {
			ws->state = WS_CLOSED;
			return -1;
		}
		if (ws_pingpong(c, ws)) return -1;
		if (nb) return 0;
		if (ws_wait(c, ws, TW_READ, ws_ping_deadline(ws)) < 0) {
			ws->state = WS_CLOSED;
			return -1;
		}
	}
}

/* ---- the Python API ---- */

/* The core's session, if it belongs to the core's current request (a core
 * whose greenlet died mid-session never reached tw_ws_end()). */
static struct tw_ws *ws_live(struct tw_core *c) {
	struct tw_ws *ws = c->ws;
	if (!ws || ws->state == WS_NONE) return NULL;
	if (ws->request != c->wsgi_req->start_of_request) {
		tw_ws_end(c);
		return NULL;
	}
	return ws;
}

static PyObject *str_text;
static PyObject *str_binary;

/* The calling request's core, or NULL with an exception set. Through
 * uWSGI's own current_wsgi_req hook (the engine's, hooks.c), as uWSGI's
 * websocket functions find their request: NULL outside a request greenlet. */
static struct tw_core *ws_core(const char *fn) {
	struct wsgi_request *wsgi_req = uwsgi.current_wsgi_req ? current_wsgi_req() : NULL;
	if (!wsgi_req || !utornado.core || wsgi_req->async_id < 0 || wsgi_req->async_id >= utornado.cores) {
		PyErr_Format(PyExc_RuntimeError, "uwsgi.%s() must be called from the request's own greenlet", fn);
		return NULL;
	}
	return &utornado.core[wsgi_req->async_id];
}

static struct tw_ws *ws_session(const char *fn, struct tw_core **core) {
	struct tw_core *c = ws_core(fn);
	if (!c) return NULL;
	struct tw_ws *ws = ws_live(c);
	if (!ws) {
		PyErr_Format(PyExc_OSError, "uwsgi.%s(): no websocket on this request (call uwsgi.websocket_handshake() first)", fn);
		return NULL;
	}
	if (ws->state != WS_OPEN) {
		PyErr_Format(PyExc_OSError, "uwsgi.%s(): the websocket is closed", fn);
		return NULL;
	}
	*core = c;
	return ws;
}

static PyObject *ws_gone(const char *fn) {
	if (PyErr_Occurred()) return NULL;
	return PyErr_Format(PyExc_OSError, "uwsgi.%s(): the websocket is closed", fn);
}

static int add_header(struct wsgi_request *wsgi_req, const char *name, const char *value, size_t value_len) {
	return uwsgi_response_add_header(wsgi_req, (char *) name, (uint16_t) strlen(name), (char *) value, (uint16_t) value_len);
}

/* str or bytes -> pointer and length, borrowed from obj (a str keeps its UTF-8 form) */
static int text_arg(PyObject *obj, const char **s, Py_ssize_t *len) {
	if (PyBytes_Check(obj)) return PyBytes_AsStringAndSize(obj, (char **) s, len);
	if (PyUnicode_Check(obj)) {
		*s = PyUnicode_AsUTF8AndSize(obj, len);
		return *s ? 0 : -1;
	}
	PyErr_SetString(PyExc_TypeError, "websocket header names and values must be str or bytes");
	return -1;
}

/* the app's extra headers: an iterable of (name, value) pairs */
static int add_extra_headers(struct wsgi_request *wsgi_req, PyObject *headers) {
	int ret = -1;
	PyObject *it = PyObject_GetIter(headers);
	PyObject *item = NULL;
	if (!it) return -1;
	while ((item = PyIter_Next(it))) {
		const char *name, *value;
		Py_ssize_t name_len, value_len;
		if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
			PyErr_SetString(PyExc_TypeError, "websocket_handshake(headers=...) takes (name, value) pairs");
			goto end;
		}
		if (text_arg(PyTuple_GET_ITEM(item, 0), &name, &name_len)) goto end;
		if (text_arg(PyTuple_GET_ITEM(item, 1), &value, &value_len)) goto end;
		if (!is_token(name, name_len) || !is_field_value(value, value_len) || value_len > 0xffff) {
			PyErr_SetString(PyExc_ValueError, "websocket_handshake(headers=...): invalid header name or value");
			goto end;
		}
		if (uwsgi_response_add_header(wsgi_req, (char *) name, (uint16_t) name_len, (char *) value, (uint16_t) value_len)) {
			PyErr_SetString(PyExc_OSError, "websocket_handshake(): unable to add a header");
			goto end;
		}
		Py_CLEAR(item);
	}
	if (!PyErr_Occurred()) ret = 0;
end:
	Py_XDECREF(item);
	Py_DECREF(it);
	return ret;
}

static struct tw_ws *ws_for_core(struct tw_core *c) {
	if (!c->ws) {
		c->ws = calloc(1, sizeof(struct tw_ws));
		if (!c->ws) PyErr_NoMemory();
	}
	return c->ws;
}

/*
 * uwsgi.websocket_handshake(key=None, origin=None, proto=None, headers=None):
 * answer the upgrade with 101. key: the request's Sec-WebSocket-Key when
 * empty; proto: the subprotocol the app chose (sent only then); headers: more
 * (name, value) pairs for the 101. Raises OSError when the request is not a
 * valid websocket upgrade (nothing is sent then: the app may answer it).
 */
static PyObject *py_ws_handshake(PyObject *self, PyObject *args, PyObject *kwargs) {
	static char *kwlist[] = {"key", "origin", "proto", "headers", NULL};
	const char *key = NULL, *origin = NULL, *proto = NULL;
	Py_ssize_t key_len = 0, origin_len = 0, proto_len = 0;
	PyObject *headers = Py_None;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z#z#z#O:websocket_handshake", kwlist,
			&key, &key_len, &origin, &origin_len, &proto, &proto_len, &headers)) return NULL;
	struct tw_core *c = ws_core("websocket_handshake");
	if (!c) return NULL;
	struct wsgi_request *wsgi_req = c->wsgi_req;
	if (ws_live(c)) return PyErr_Format(PyExc_OSError, "uwsgi.websocket_handshake(): this request already is a websocket");
	struct tw_ws *ws = ws_for_core(c);
	if (!ws) return NULL;

	/* RFC 6455 4.2.1 */
	uint16_t len = 0;
	char *value;
	const char *refused = NULL;
	if (uwsgi_strncmp(wsgi_req->method, wsgi_req->method_len, "GET", 3)) refused = "the method is not GET";
	else if (!(value = uwsgi_get_var(wsgi_req, "HTTP_UPGRADE", 12, &len)) || !has_token(value, len, "websocket")) refused = "no Upgrade: websocket";
	else if (!(value = uwsgi_get_var(wsgi_req, "HTTP_CONNECTION", 15, &len)) || !has_token(value, len, "upgrade")) refused = "no Connection: upgrade";
	else if (!(value = uwsgi_get_var(wsgi_req, "HTTP_SEC_WEBSOCKET_VERSION", 26, &len)) || uwsgi_strncmp(value, len, "13", 2)) refused = "Sec-WebSocket-Version is not 13";
	else {
		if (!key_len) {
			key = uwsgi_get_var(wsgi_req, "HTTP_SEC_WEBSOCKET_KEY", 22, &len);
			key_len = key ? len : 0;
		}
		if (!key_ok(key, key_len)) refused = "Sec-WebSocket-Key is not 16 bytes in base64";
	}
	if (!refused && proto_len && !is_token(proto, proto_len)) refused = "the subprotocol is not a token";
	if (!refused && origin_len && (!is_field_value(origin, origin_len) || origin_len > 0xffff)) refused = "the origin is not a header value";
	if (refused) return PyErr_Format(PyExc_OSError, "websocket handshake refused: %s", refused);

	/* Sec-WebSocket-Accept: base64(SHA-1(key + GUID)) (4.2.2) */
	uint8_t material[24 + 36], digest[20];
	memcpy(material, key, 24);
	memcpy(material + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
	sha1_short(material, sizeof(material), digest);
	size_t accept_len = 0;
	char *accept = uwsgi_base64_encode((char *) digest, 20, &accept_len);
	if (!accept) return PyErr_NoMemory();

	int failed = uwsgi_response_prepare_headers(wsgi_req, "101 Switching Protocols", 23)
		|| add_header(wsgi_req, "Upgrade", "websocket", 9)
		|| add_header(wsgi_req, "Connection", "Upgrade", 7)
		|| add_header(wsgi_req, "Sec-WebSocket-Accept", accept, accept_len)
		|| (proto_len && add_header(wsgi_req, "Sec-WebSocket-Protocol", proto, proto_len))
		|| (origin_len && add_header(wsgi_req, "Sec-WebSocket-Origin", origin, origin_len));
	free(accept);
	if (failed) return PyErr_Format(PyExc_OSError, "uwsgi.websocket_handshake(): unable to prepare the response (headers already sent?)");
	if (headers != Py_None && add_extra_headers(wsgi_req, headers)) return NULL;
	if (uwsgi_response_write_headers_do(wsgi_req)) return PyErr_Format(PyExc_OSError, "unable to complete websocket handshake");

	/* the connection is the websocket's now: never back to HTTP keep-alive */
	c->close_after = 1;
	uint64_t now = tw_now_ns();
	ws->state = WS_OPEN;
	ws->request = wsgi_req->start_of_request;
	ws->going_away = utornado.phase != TW_SERVING;
	ws->waiting = ws->close_sent = ws->close_received = ws->ping_outstanding = 0;
	ws->last_rx = now;
	ws->last_ping = now;
	ws->in_pos = ws->in_len = 0;
	ws->have_header = 0;
	ws->msg_len = 0;
	ws->msg_opcode = ws->last_opcode = 0;
	ws->u_need = 0;
	Py_RETURN_NONE;
}

/* uwsgi.websocket_recv(): the next message's payload (bytes), waiting for it;
 * OSError once the websocket is closed. */
static PyObject *py_ws_recv(PyObject *self, PyObject *args) {
	PyObject *unused = NULL;
	if (!PyArg_ParseTuple(args, "|O:websocket_recv", &unused)) return NULL;
	struct tw_core *c;
	struct tw_ws *ws = ws_session("websocket_recv", &c);
	if (!ws) return NULL;
	if (ws_receive(c, ws, 0) < 0) return ws_gone("websocket_recv");
	PyObject *ret = PyBytes_FromStringAndSize(ws->msg, ws->msg_len);
	ws_message_taken(ws);
	return ret;
}

/* uwsgi.websocket_recv_nb(): the same without waiting: b"" when no whole
 * message has arrived yet. */
static PyObject *py_ws_recv_nb(PyObject *self, PyObject *args) {
	PyObject *unused = NULL;
	if (!PyArg_ParseTuple(args, "|O:websocket_recv_nb", &unused)) return NULL;
	struct tw_core *c;
	struct tw_ws *ws = ws_session("websocket_recv_nb", &c);
	if (!ws) return NULL;
	int ret = ws_receive(c, ws, 1);
	if (ret < 0) return ws_gone("websocket_recv_nb");
	if (ret == 0) return PyBytes_FromStringAndSize("", 0);
	PyObject *msg = PyBytes_FromStringAndSize(ws->msg, ws->msg_len);
	ws_message_taken(ws);
	return msg;
}

/* uwsgi.websocket_recv_message(nb=False): ("text" or "binary", payload bytes);
 * with nb=True, None when no whole message has arrived yet. */
static PyObject *py_ws_recv_message(PyObject *self, PyObject *args, PyObject *kwargs) {
	static char *kwlist[] = {"nb", NULL};
	int nb = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:websocket_recv_message", kwlist, &nb)) return NULL;
	struct tw_core *c;
	struct tw_ws *ws = ws_session("websocket_recv_message", &c);
	if (!ws) return NULL;
	int ret = ws_receive(c, ws, nb);
	if (ret < 0) return ws_gone("websocket_recv_message");
	if (ret == 0) Py_RETURN_NONE;
	PyObject *payload = PyBytes_FromStringAndSize(ws->msg, ws->msg_len);
	ws_message_taken(ws);
	if (!payload) return NULL;
	PyObject *kind = ws->last_opcode == WS_TEXT ? str_text : str_binary;
	PyObject *tuple = PyTuple_Pack(2, kind, payload);
	Py_DECREF(payload);
	return tuple;
}

static PyObject *ws_send(PyObject *args, uint8_t opcode, const char *fn) {
	Py_buffer msg;
	char format[32];
	snprintf(format, sizeof(format), "s*:%s", fn);
	if (!PyArg_ParseTuple(args, format, &msg)) return NULL;
	struct tw_core *c;
	struct tw_ws *ws = ws_session(fn, &c);
	PyObject *ret = NULL;
	if (!ws) goto end;
	if (ws->going_away) {
		/* draining: the session ends here */
		ws_close_handshake(c, ws, 1001, "going away", 10);
		ret = ws_gone(fn);
		goto end;
	}
	if (ws_send_frame(c, ws, opcode, msg.buf, (size_t) msg.len, 0)) {
		if (!PyErr_Occurred()) PyErr_Format(PyExc_OSError, "uwsgi.%s(): unable to send websocket message", fn);
		goto end;
	}
	ret = Py_None;
	Py_INCREF(ret);
end:
	PyBuffer_Release(&msg);
	return ret;
}

/* uwsgi.websocket_send(message): a text frame; uwsgi.websocket_send_binary(message): a binary one */
static PyObject *py_ws_send(PyObject *self, PyObject *args) {
	return ws_send(args, WS_TEXT, "websocket_send");
}

static PyObject *py_ws_send_binary(PyObject *self, PyObject *args) {
	return ws_send(args, WS_BINARY, "websocket_send_binary");
}

/* uwsgi.websocket_close(code=1000, reason=""): the close handshake from our
 * side; returns once the client answered (or the close timeout passed). */
static PyObject *py_ws_close(PyObject *self, PyObject *args, PyObject *kwargs) {
	static char *kwlist[] = {"code", "reason", NULL};
	int code = 1000;
	PyObject *reason = NULL;
	const char *text = "";
	Py_ssize_t text_len = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|iO:websocket_close", kwlist, &code, &reason)) return NULL;
	if (code < 0 || !close_code_ok((unsigned) code)) {
		return PyErr_Format(PyExc_ValueError, "websocket_close(): %d is not a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999)", code);
	}
	if (reason && text_arg(reason, &text, &text_len)) return NULL;
	if (text_len > TW_WS_CTL_MAX - 2 || !utf8_valid(text, text_len)) {
		return PyErr_Format(PyExc_ValueError, "websocket_close(): the reason must be UTF-8 of at most 123 bytes");
	}
	struct tw_core *c = ws_core("websocket_close");
	if (!c) return NULL;
	struct tw_ws *ws = ws_live(c);
	if (!ws) return PyErr_Format(PyExc_OSError, "uwsgi.websocket_close(): no websocket on this request");
	ws_close_handshake(c, ws, (unsigned) code, text, (size_t) text_len);
	if (PyErr_Occurred()) return NULL;
	Py_RETURN_NONE;
}

static PyMethodDef tw_ws_methods[] = {
	{"websocket_handshake", (PyCFunction) (void (*)(void)) py_ws_handshake, METH_VARARGS | METH_KEYWORDS, "websocket_handshake(key=None, origin=None, proto=None, headers=None): answer a websocket upgrade (tornado engine)"},
	{"websocket_recv", py_ws_recv, METH_VARARGS, "the next websocket message, waiting for it (tornado engine)"},
	{"websocket_recv_nb", py_ws_recv_nb, METH_VARARGS, "the next websocket message, or b'' (tornado engine)"},
	{"websocket_recv_message", (PyCFunction) (void (*)(void)) py_ws_recv_message, METH_VARARGS | METH_KEYWORDS, "websocket_recv_message(nb=False): ('text' or 'binary', payload) (tornado engine)"},
	{"websocket_send", py_ws_send, METH_VARARGS, "send a websocket text message (tornado engine)"},
	{"websocket_send_binary", py_ws_send_binary, METH_VARARGS, "send a websocket binary message (tornado engine)"},
	{"websocket_close", (PyCFunction) (void (*)(void)) py_ws_close, METH_VARARGS | METH_KEYWORDS, "websocket_close(code=1000, reason=''): close the websocket (tornado engine)"},
	{NULL, NULL, 0, NULL},
};

/* Put the engine's websocket functions in the uwsgi module. */
void tw_ws_replace_module_functions(void) {
	PyObject *uwsgi_dict = get_uwsgi_pydict("uwsgi");
	if (!uwsgi_dict) {
		PyErr_Clear();
		return;
	}
	str_text = PyUnicode_InternFromString("text");
	str_binary = PyUnicode_InternFromString("binary");
	PyObject *module = PyUnicode_FromString("uwsgi_tornado_engine");
	if (!str_text || !str_binary || !module) {
		PyErr_Print();
		Py_XDECREF(module);
		return;
	}
	PyMethodDef *def;
	for (def = tw_ws_methods; def->ml_name; def++) {
		PyObject *f = PyCFunction_NewEx(def, NULL, module);
		if (!f || PyDict_SetItemString(uwsgi_dict, def->ml_name, f)) PyErr_Print();
		Py_XDECREF(f);
	}
	Py_DECREF(module);
}

/* The core's request is over (loop.c): forget its session, free its message buffers. */
void tw_ws_end(struct tw_core *c) {
	struct tw_ws *ws = c->ws;
	if (!ws || ws->state == WS_NONE) return;
	ws->state = WS_NONE;
	ws->going_away = 0;
	ws->have_header = 0;
	ws->in_pos = ws->in_len = 0;
	ws->msg_len = 0;
	ws->msg_opcode = 0;
	free(ws->msg);
	ws->msg = NULL;
	ws->msg_cap = 0;
	free(ws->out);
	ws->out = NULL;
	ws->out_cap = 0;
}

/*
 * A drain (signals.c, from the hub): every open websocket gets close 1001.
 * A session waiting in websocket_recv() is woken and closes at once; one
 * whose app is elsewhere (sleeping, sending) closes at its next websocket
 * call. Each then waits up to --tornado-websocket-close-timeout for the
 * client's close. Returns how many sessions were told.
 */
int tw_ws_drain(void) {
	int i, told = 0;
	for (i = 0; i < utornado.cores; i++) {
		struct tw_core *c = &utornado.core[i];
		struct tw_ws *ws = c->ws;
		if (!ws || ws->state != WS_OPEN || ws->going_away || c->state != TW_CORE_APP || ws->request != c->wsgi_req->start_of_request) continue;
		ws->going_away = 1;
		told++;
		if (ws->waiting && tw_core_suspended(c)) tw_wake(c, c->wait.gen, TW_WAIT_CANCELLED);
	}
	return told;
}
