package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// requestTimeout bounds one request of the load, connection included.
const requestTimeout = 10 * time.Second

// client is one keep-alive HTTP/1.1 connection that speaks just enough of
// the protocol for the load: it writes a request prepared in full and reads
// the status and Content-Length of the answer, discarding the body. The
// standard library's client costs several times more CPU per request, and
// on a small machine the load generator's CPU is taken from the system it
// measures; the same client drives every figure and every ceiling, so
// their ratios compare like with like.
type client struct {
	addr string
	conn net.Conn
	r    *bufio.Reader
}

func newClient(addr string) *client { return &client{addr: addr} }

// do sends req, a complete HTTP/1.1 request, and returns the answer's
// status. After an error the connection is closed, and the next request
// dials again.
func (c *client) do(req []byte) (int, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, requestTimeout)
		if err != nil {
			return 0, err
		}
		c.conn = conn
		if c.r == nil {
			c.r = bufio.NewReaderSize(conn, 16<<10)
		} else {
			c.r.Reset(conn)
		}
	}
	_ = c.conn.SetDeadline(time.Now().Add(requestTimeout))
	status, keep, err := c.exchange(req)
	if err != nil || !keep {
		c.close()
	}
	return status, err
}

func (c *client) exchange(req []byte) (status int, keep bool, err error) {
	if _, err := c.conn.Write(req); err != nil {
		return 0, false, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("malformed status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("malformed status line %q", line)
	}
	length, keep := -1, true
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return status, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return status, false, fmt.Errorf("malformed header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return status, false, fmt.Errorf("malformed Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			keep = false
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return status, false, errors.New("chunked answers are not supported by the load client")
		}
	}
	if length < 0 {
		return status, false, errors.New("answer without Content-Length")
	}
	if _, err := c.r.Discard(length); err != nil {
		return status, false, fmt.Errorf("reading the body: %w", err)
	}
	return status, keep, nil
}

func (c *client) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// post appends a POST request for path with the given headers (name,
// value pairs) and body to buf.
func post(buf []byte, host, path string, body []byte, headers ...string) []byte {
	buf = append(buf, "POST "...)
	buf = append(buf, path...)
	buf = append(buf, " HTTP/1.1\r\nHost: "...)
	buf = append(buf, host...)
	buf = append(buf, "\r\nContent-Type: application/json\r\n"...)
	for i := 0; i+1 < len(headers); i += 2 {
		buf = append(buf, headers[i]...)
		buf = append(buf, ": "...)
		buf = append(buf, headers[i+1]...)
		buf = append(buf, "\r\n"...)
	}
	buf = append(buf, "Content-Length: "...)
	buf = strconv.AppendInt(buf, int64(len(body)), 10)
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, body...)
}
