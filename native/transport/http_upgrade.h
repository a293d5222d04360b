// HTTP/1.1 → WebSocket upgrade (RFC 6455 §4.2). Parses a request head and writes the 101 answer or a
// well-formed HTTP error. Pure functions over bytes; the connection code owns the socket.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace starling {

// Upper bound of a request head (request line + headers + blank line). Browsers send ~500 bytes; cookies
// can make it a few KiB. Past this the request is answered 400 and closed.
constexpr size_t kMaxRequestHead = 8192;

enum class Upgrade : uint8_t {
  NeedMore,         // no "\r\n\r\n" yet, no bare LF so far and fewer than kMaxRequestHead bytes
  Ok,               // a valid upgrade for `path`
  BadRequest,       // 400: a bare LF in the head (even an incomplete one), malformed request
                    //      line/headers, not GET, not HTTP/1.1+, missing/invalid Sec-WebSocket-Key
                    //      (must be base64 of 16 bytes), head too large; also every other head that
                    //      parse_request (http_request.h) refuses: request-smuggling defences, a
                    //      repeated Origin/Authorization/..., a Transfer-Encoding other than chunked
  NotFound,         // 404: a well-formed request for another path
  UpgradeRequired,  // 426: a plain HTTP request (no "Upgrade: websocket" / "Connection: upgrade"
                    //      tokens) or Sec-WebSocket-Version other than 13
};

struct UpgradeRequest {
  Upgrade status;
  size_t head_len;        // bytes of the request head including the final "\r\n\r\n" (when not NeedMore;
                          // 0 when the head has no end yet: too large, or refused for a bare LF
                          // before its "\r\n\r\n" arrived)
  char accept[29];        // Sec-WebSocket-Accept value, NUL-terminated (when Ok)
  bool starling_v1;       // the client offered the subprotocol "starling.v1" (when Ok)
  // The value of the first "token" parameter of the query string, still percent-encoded (when Ok; empty
  // when there is none): an entitlement token given on the URL, since browsers cannot set headers on a
  // WebSocket (PROTOCOL.md "Entitlement"). Points into the request head: valid while it is.
  const char* token;
  size_t token_len;
  const char* reason;     // short human-readable reason for an error status (static string)
};

// Parses the request head in p[0..len) with parse_request (http_request.h; later HTTP versions accepted),
// then judges it as an upgrade. Every line must end with CRLF: a bare LF ('\n' not preceded by
// '\r') anywhere in the head is answered 400 as soon as it is in p, before the head is complete, so a
// client using "\n" line endings is refused at once instead of waiting for the handshake timeout (bytes
// after a complete head are not looked at). Header names are case-insensitive; the Upgrade and Connection
// headers are comma-separated token lists (case-insensitive); the request target must equal `path`
// exactly (a query string "?..." after the path is allowed; only its "token" parameter is read). Checks in this order, the first
// failure deciding: bare LF, head too large (400); request line, header syntax, Host and the rest of
// parse_request's checks, then method, version (400); path (404); Upgrade and Connection tokens, then Sec-WebSocket-Version (426); Sec-WebSocket-Key
// (400). So "GET /other" is 404 and a plain "GET /" is 426. Never reads past p[len).
UpgradeRequest parse_upgrade(const char* p, size_t len, std::string_view path);

// Writes "HTTP/1.1 101 Switching Protocols" with Upgrade, Connection, Sec-WebSocket-Accept and, when
// the client offered it, "Sec-WebSocket-Protocol: starling.v1". Returns bytes written (< 256), or 0
// if cap is too small or req.status is not Ok.
size_t write_upgrade_response(const UpgradeRequest& req, char* out, size_t cap);

// Writes a complete HTTP/1.1 error response for status (400, 404 or 426) with "Connection: close",
// a text/plain body naming the reason, and for 426 "Upgrade: websocket" and
// "Sec-WebSocket-Version: 13". Returns bytes written, or 0 if cap is too small (512 always suffices;
// a longer reason is cut) or status is NeedMore/Ok. reason may be null (empty body line).
size_t write_http_error(Upgrade status, const char* reason, char* out, size_t cap);

// Decodes the percent-encoding of a query parameter value ("%2F" → '/', '+' → ' ') into out[0..cap).
// Returns the decoded length, or -1 when a '%' is not followed by two hex digits or the result would not
// fit in cap bytes.
long percent_decode(std::string_view in, char* out, size_t cap);

// SHA-1 of data (RFC 3174) into out[20]. Used only for the accept key.
void sha1(const uint8_t* data, size_t len, uint8_t out[20]);

// Standard base64 (with padding) of data into out; returns chars written (4 * ceil(len / 3)). No NUL.
size_t base64_encode(const uint8_t* data, size_t len, char* out);

}  // namespace starling
