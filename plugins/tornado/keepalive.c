/*
 * keepalive.c: floor 1 (calls event.c only): whether an HTTP connection
 * stays open after a response, and
 * telling the client.
 *
 * uWSGI 2.0 gets both wrong. Its HTTP/1.1 socket (--http11-socket) keeps
 * every complete request's connection open, whether or not the response says
 * where its body ends, and ignores "Connection: close": a WSGI app that sends
 * no Content-Length (a generator, many small apps) leaves its client waiting
 * for more body until --socket-timeout; behind nginx with a keep-alive
 * upstream, 30 s per request. Its plain HTTP socket (--http-socket, and
 * https) closes every connection after the response but answers an HTTP/1.1
 * request without "Connection: close", so a client with a connection pool
 * (requests, urllib3, aiohttp) sends its next request on a connection the
 * server is closing, and loses it.
 *
 * Just before the headers go out, the engine looks at them once. On
 * --http11-socket a response that has a body but neither Content-Length nor
 * Transfer-Encoding, or a request or response that says "Connection: close",
 * gets "Connection: close" and its connection is closed after the response,
 * as HTTP/1.1 says (RFC 9112, 6.3 and 9.6); everything else stays kept
 * alive. On --http-socket every HTTP/1.1 response says "Connection: close".
 *
 * A connection stays open only when the next byte on it is known to start a
 * new request: not after a chunked request body (uWSGI frames nothing of
 * it), a body the app did not read to its end, pipelined bytes that came
 * with the request (uWSGI's parser cannot be handed bytes it did not read
 * itself, so the client is told "Connection: close" and resends them, RFC
 * 9112 9.3.2), a 101 Switching Protocols (the websocket session owns the
 * connection to its end), or a rejected head (framing.c). Such a connection
 * is closed in stages (RFC 9112 9.6): write side first, then what the client
 * still sends is read and dropped for a bounded time, so the response is not
 * lost to a TCP reset.
 *
 * The socket's write functions are wrapped too: a response to HEAD, or a
 * 1xx (but 101), 204 or 304 response, sends its head and never a body byte,
 * whatever the app returns (RFC 9110 9.3.2, 15.3.5, 15.4.5). And "Expect:
 * 100-continue" is answered with 100 Continue when the app first reads the
 * body, not before (RFC 9110 10.1.1): an app that answers 413 or 401 without
 * reading never makes the client send it.
 */
#include "tornado.h"

/* the socket's own header finisher (uWSGI's base one) */
static int (*fix_headers_next)(struct wsgi_request *);

/* The socket's own functions under the ones of this file, per HTTP socket
 * (http and https differ); a request's core points at its socket's. */
struct tw_http_ops {
	struct uwsgi_socket *sock;
	int (*write)(struct wsgi_request *, char *, size_t);
	int (*writev)(struct wsgi_request *, struct iovec *, size_t *);
	int (*sendfile)(struct wsgi_request *, int, size_t, size_t);
	ssize_t (*read_body)(struct wsgi_request *, char *, size_t);
	void (*close)(struct wsgi_request *);
};
static struct tw_http_ops *http_ops;
static int http_ops_len;

static struct tw_core *core_of(struct wsgi_request *wsgi_req) {
	return &utornado.core[wsgi_req->async_id];
}

static int is_header(char *line, size_t len, char *name, size_t name_len, char **value, size_t *value_len) {
	if (len <= name_len || line[name_len] != ':' || uwsgi_strnicmp(line, name_len, name, name_len)) return 0;
	char *v = line + name_len + 1;
	char *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t')) v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
	*value = v;
	*value_len = end - v;
	return 1;
}

static int says_close(char *value, size_t len) {
	return !uwsgi_strnicmp(value, len, "close", 5);
}

/* What the response's headers say: framed (Content-Length or
 * Transfer-Encoding), a Connection header, "Connection: close". */
#define TW_FRAMED     1
#define TW_CONNECTION 2
#define TW_CLOSE      4
static int scan_headers(struct uwsgi_buffer *headers) {
	int found = 0;
	char *p = headers->buf;
	char *end = headers->buf + headers->pos;
	/* skip the status line */
	char *eol = memchr(p, '\n', end - p);
	p = eol ? eol + 1 : end;
	while (p < end) {
		eol = memchr(p, '\n', end - p);
		char *line_end = eol ? eol : end;
		size_t len = line_end - p;
		if (len > 0 && p[len - 1] == '\r') len--;
		char *value;
		size_t value_len;
		if (is_header(p, len, "Content-Length", 14, &value, &value_len) || is_header(p, len, "Transfer-Encoding", 17, &value, &value_len)) {
			found |= TW_FRAMED;
		}
		else if (is_header(p, len, "Connection", 10, &value, &value_len)) {
			found |= TW_CONNECTION | (says_close(value, value_len) ? TW_CLOSE : 0);
		}
		p = eol ? eol + 1 : end;
	}
	return found;
}

/* a response that has no body (RFC 9110 6.4.1); 101 hands the connection over */
static int has_no_body(struct wsgi_request *wsgi_req) {
	int status = wsgi_req->status;
	return (status >= 100 && status < 200 && status != 101) || status == 204 || status == 304
		|| !uwsgi_strncmp(wsgi_req->method, wsgi_req->method_len, "HEAD", 4);
}

/* Would the connection hold bytes that are not the start of a new request
 * once this response is complete? (the request's body, pipelined bytes) */
static int leaves_unread(struct tw_core *c, struct wsgi_request *wsgi_req) {
	return c->rejected || (c->req_flags & TW_REQ_CHUNKED) || wsgi_req->post_pos < wsgi_req->post_cl
		|| wsgi_req->proto_parser_remains > 0;
}

static int tw_http_fix_headers(struct wsgi_request *wsgi_req) {
	struct tw_core *c = core_of(wsgi_req);
	int found = scan_headers(wsgi_req->headers);
	int close;
	c->no_body = has_no_body(wsgi_req);
	if (wsgi_req->socket->retry) {
		/* --http11-socket: uWSGI keeps the connection unless we say otherwise */
		uint16_t len = 0;
		char *request_connection = uwsgi_get_var(wsgi_req, "HTTP_CONNECTION", 15, &len);
		close = (found & TW_CLOSE) || (request_connection && says_close(request_connection, len))
			|| (!(found & TW_FRAMED) && !c->no_body)   /* 101 included: the connection is the websocket's */
			|| (wsgi_req->status < 200)                /* an interim status as the final one: no way to go on */
			|| leaves_unread(c, wsgi_req);
		c->close_after = close;
	}
	else {
		/* --http-socket closes every connection: say so where it is not the
		 * default (a 101 Switching Protocols says Connection: Upgrade) */
		close = !uwsgi_strncmp(wsgi_req->protocol, wsgi_req->protocol_len, "HTTP/1.1", 8) && wsgi_req->status != 101;
	}
	/* the app's own Connection header stands */
	if (close && !(found & TW_CONNECTION) && uwsgi_buffer_append(wsgi_req->headers, "Connection: close\r\n", 19)) return -1;
	return fix_headers_next(wsgi_req);
}

/* ---- the socket's functions, wrapped ---- */

/* no body after the head of a response that has none: the app's bytes are
 * taken as written and dropped */
static int tw_http_write(struct wsgi_request *wsgi_req, char *buf, size_t len) {
	struct tw_core *c = core_of(wsgi_req);
	if (c->no_body && wsgi_req->headers_sent) {
		wsgi_req->write_pos = len;
		return UWSGI_OK;
	}
	return c->http->write(wsgi_req, buf, len);
}

/* uWSGI writes head and first body chunk in one writev (the head is iov[0],
 * shifted by the socket's writev as it goes out) */
static int tw_http_writev(struct wsgi_request *wsgi_req, struct iovec *iov, size_t *iov_len) {
	struct tw_core *c = core_of(wsgi_req);
	if (!c->no_body) return c->http->writev(wsgi_req, iov, iov_len);
	if (wsgi_req->headers_sent) {
		size_t i;
		for (i = 0; i < *iov_len; i++) wsgi_req->write_pos += iov[i].iov_len;
		return UWSGI_OK;
	}
	size_t head_only = 1;
	return c->http->writev(wsgi_req, iov, &head_only);
}

static int tw_http_sendfile(struct wsgi_request *wsgi_req, int fd, size_t pos, size_t len) {
	struct tw_core *c = core_of(wsgi_req);
	if (c->no_body && wsgi_req->headers_sent) {
		wsgi_req->write_pos = len;
		return UWSGI_OK;
	}
	return c->http->sendfile(wsgi_req, fd, pos, len);
}

/* Write all of buf on the request's connection from its core, waiting as
 * needed (each wait bounded by --socket-timeout). 0 when written. */
static int write_all(struct tw_core *c, const char *buf, size_t len) {
	struct wsgi_request *wsgi_req = c->wsgi_req;
	size_t saved = wsgi_req->write_pos;
	int ret = -1;
	wsgi_req->write_pos = 0;
	for (;;) {
		int r = c->http->write(wsgi_req, (char *) buf, len);
		if (r == UWSGI_OK) {
			ret = 0;
			break;
		}
		if (r < 0) break;
		if (tw_wait_fds(c, wsgi_req->fd, -1, TW_WRITE, tw_deadline_after(uwsgi.socket_timeout)) != TW_WAIT_READY) break;
	}
	wsgi_req->write_pos = saved;
	return ret;
}

/* Expect: 100-continue: the first read of the body asks the client for it */
static ssize_t tw_http_read_body(struct wsgi_request *wsgi_req, char *buf, size_t len) {
	struct tw_core *c = core_of(wsgi_req);
	if (c->req_flags & TW_REQ_EXPECT_CONTINUE) {
		c->req_flags &= ~TW_REQ_EXPECT_CONTINUE;
		/* not when body bytes came already, nor after the final response started */
		if (!wsgi_req->headers_sent && !wsgi_req->proto_parser_remains
			&& write_all(c, "HTTP/1.1 100 Continue\r\n\r\n", 25)) {
			errno = EPIPE;
			return -1;
		}
	}
	return c->http->read_body(wsgi_req, buf, len);
}

/* The end of a request: keep the connection only when its next byte starts
 * a new request (uWSGI's http11 close decides the rest: errors, HTTP/1.0) */
static void tw_http_close(struct wsgi_request *wsgi_req) {
	struct tw_core *c = core_of(wsgi_req);
	struct uwsgi_socket *sock = wsgi_req->socket;
	/* the log says what reached the client */
	if (c->no_body && wsgi_req->headers_sent) wsgi_req->response_size = 0;
	int unread = leaves_unread(c, wsgi_req);
	/* kept alive only after a head that passed framing.c (a timed-out or
	 * shed head ending in "\r\n\r" looks complete to uWSGI's own close) */
	int keep = sock->retry && c->head_ok && !c->close_after && !unread;
	if (keep || (!sock->retry && !unread)) {
		c->http->close(wsgi_req);
		return;
	}
	if (sock->retry) {
		sock->retry[wsgi_req->async_id] = 0;
		sock->fd_threads[wsgi_req->async_id] = -1;
	}
	/* TLS has its own close */
	if (wsgi_req->ssl) c->http->close(wsgi_req);
	/* the hub lingers (event.c), the core is free at once */
	else if (unread) tw_linger(c, wsgi_req->fd);
	else close(wsgi_req->fd);
}

/* ---- rejecting a request head (framing.c judged it) ---- */

static const char *status_line(int status) {
	switch (status) {
	case 400: return "400 Bad Request";
	case 417: return "417 Expectation Failed";
	case 431: return "431 Request Header Fields Too Large";
	case 501: return "501 Not Implemented";
	case 505: return "505 HTTP Version Not Supported";
	}
	return "400 Bad Request";
}

/* at most this many rejection lines a second per worker, then a count */
#define TW_REJECT_LOG_PER_SEC 10

static void log_rejection(struct wsgi_request *wsgi_req, int status, const char *reason) {
	static time_t second;
	static int lines, suppressed;
	time_t now = uwsgi_now();
	if (now != second) {
		if (suppressed) uwsgi_log("[tornado] %d more malformed requests rejected\n", suppressed);
		second = now;
		lines = suppressed = 0;
	}
	if (++lines > TW_REJECT_LOG_PER_SEC) {
		suppressed++;
		return;
	}
	char ip[INET6_ADDRSTRLEN] = "?";
	struct sockaddr *sa = (struct sockaddr *) &wsgi_req->client_addr;
	if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &wsgi_req->client_addr.sin.sin_addr, ip, sizeof(ip));
	else if (sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &wsgi_req->client_addr.sin6.sin6_addr, ip, sizeof(ip));
	else if (sa->sa_family == AF_UNIX) strcpy(ip, "unix socket");
	uwsgi_log("[tornado] %s to %s: %s\n", status_line(status), ip, reason);
}

/* Answer a request head the engine does not serve, before the app runs; the
 * connection closes when the request is destroyed (tw_http_close). */
void tw_http_reject(struct tw_core *c, int status, const char *reason) {
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status_line(status), (int) strlen(reason) + 1, reason);
	c->rejected = 1;
	utornado.counters.http_rejected++;
	log_rejection(c->wsgi_req, status, reason);
	if (n > 0 && n < (int) sizeof(buf)) (void) write_all(c, buf, n);
}

/* Per request, before its head is read: which socket functions are under ours. */
void tw_http_begin(struct tw_core *c) {
	struct uwsgi_socket *sock = c->wsgi_req->socket;
	c->close_after = 0;
	c->req_flags = 0;
	c->no_body = 0;
	c->rejected = 0;
	c->head_ok = 0;
	c->http = NULL;
	int i;
	for (i = 0; i < http_ops_len; i++) {
		if (http_ops[i].sock == sock) {
			c->http = &http_ops[i];
			return;
		}
	}
}

/* --http-socket, --http11-socket, --https-socket (or --protocol http) */
static int is_http_protocol(struct uwsgi_socket *sock) {
	char *name = sock->proto_name ? sock->proto_name : uwsgi.protocol;
	return name && (!strcmp(name, "http") || !strcmp(name, "http11") || !strcmp(name, "https"));
}

/* Per request: an HTTP socket is one whose header finisher is ours by now. */
int tw_http_socket(struct uwsgi_socket *sock) {
	return sock->proto_fix_headers == tw_http_fix_headers;
}

/* Take over the header finisher, the writes, the body reads and the close
 * of every HTTP socket. */
void tw_keepalive_init(void) {
	struct uwsgi_socket *sock;
	int n = 0;
	for (sock = uwsgi.sockets; sock; sock = sock->next) n++;
	http_ops = uwsgi_calloc(sizeof(struct tw_http_ops) * (n > 0 ? n : 1));
	for (sock = uwsgi.sockets; sock; sock = sock->next) {
		if (!is_http_protocol(sock) || sock->proto_fix_headers != uwsgi_proto_base_fix_headers) continue;
		struct tw_http_ops *ops = &http_ops[http_ops_len++];
		*ops = (struct tw_http_ops) {.sock = sock, .write = sock->proto_write, .writev = sock->proto_writev,
			.sendfile = sock->proto_sendfile, .read_body = sock->proto_read_body, .close = sock->proto_close};
		fix_headers_next = sock->proto_fix_headers;
		sock->proto_fix_headers = tw_http_fix_headers;
		sock->proto_write = tw_http_write;
		if (sock->proto_writev) sock->proto_writev = tw_http_writev;
		sock->proto_sendfile = tw_http_sendfile;
		sock->proto_read_body = tw_http_read_body;
		sock->proto_close = tw_http_close;
	}
}
