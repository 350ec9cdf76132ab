/*
 * keepalive.c: whether an HTTP connection stays open after a response, and
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
 */
#include "tornado.h"

/* the socket's own header finisher (uWSGI's base one) */
static int (*fix_headers_next)(struct wsgi_request *);

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

static int has_no_body(struct wsgi_request *wsgi_req) {
	int status = wsgi_req->status;
	return (status >= 100 && status < 200) || status == 204 || status == 304
		|| !uwsgi_strncmp(wsgi_req->method, wsgi_req->method_len, "HEAD", 4);
}

static int tw_http_fix_headers(struct wsgi_request *wsgi_req) {
	struct tw_core *c = &utornado.core[wsgi_req->async_id];
	int found = scan_headers(wsgi_req->headers);
	int close;
	if (wsgi_req->socket->retry) {
		/* --http11-socket: uWSGI keeps the connection unless we say otherwise */
		uint16_t len = 0;
		char *request_connection = uwsgi_get_var(wsgi_req, "HTTP_CONNECTION", 15, &len);
		close = (found & TW_CLOSE) || (request_connection && says_close(request_connection, len))
			|| (!(found & TW_FRAMED) && !has_no_body(wsgi_req));
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

/* --http-socket, --http11-socket, --https-socket (or --protocol http) */
static int is_http_protocol(struct uwsgi_socket *sock) {
	char *name = sock->proto_name ? sock->proto_name : uwsgi.protocol;
	return name && (!strcmp(name, "http") || !strcmp(name, "http11") || !strcmp(name, "https"));
}

/* Per request: an HTTP socket is one whose header finisher is ours by now. */
int tw_http_socket(struct uwsgi_socket *sock) {
	return sock->proto_fix_headers == tw_http_fix_headers;
}

/* Take over the header finisher of every HTTP socket. */
void tw_keepalive_init(void) {
	struct uwsgi_socket *sock;
	for (sock = uwsgi.sockets; sock; sock = sock->next) {
		if (!is_http_protocol(sock) || sock->proto_fix_headers != uwsgi_proto_base_fix_headers) continue;
		fix_headers_next = sock->proto_fix_headers;
		sock->proto_fix_headers = tw_http_fix_headers;
	}
}
