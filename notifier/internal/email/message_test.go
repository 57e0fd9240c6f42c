package email

import (
	"bytes"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/event"
)

func sampleEvent() event.OrderPaid {
	return event.OrderPaid{
		ID: "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60", Type: event.TypeOrderPaid,
		Timestamp: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
		Data: event.OrderData{
			OrderID: "0193a5b2-7c1d-7aaa-8bbb-0123456789ab", CustomerEmail: "ada@example.com",
			ProductName: "Book", Quantity: 2, AmountMinor: 2100, Currency: "USD",
		},
	}
}

// parsed is a rendered message read back the way a mail client reads it.
type parsed struct {
	header mail.Header
	body   string
}

func parse(t *testing.T, raw []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("read message: %v\n%s", err, raw)
	}
	var body io.Reader = m.Body
	if m.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
		body = quotedprintable.NewReader(body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return parsed{m.Header, string(b)}
}

func TestRender(t *testing.T) {
	jpy := sampleEvent()
	jpy.Data.ProductName = "Tee — grün, 抹茶"
	jpy.Data.AmountMinor, jpy.Data.Currency = 500, "JPY"
	tests := []struct {
		name       string
		ev         event.OrderPaid
		wantInBody []string
	}{
		{"ascii", sampleEvent(), []string{"Book", "Quantity: 2", "21.00 USD", "0193a5b2-7c1d-7aaa-8bbb-0123456789ab"}},
		{"non-ascii product", jpy, []string{"Tee — grün, 抹茶", "500 JPY"}},
	}
	date := time.Date(2026, 11, 28, 10, 0, 5, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := NewMessage(tt.ev).Render("orders@example.com", date)
			if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
				t.Error("bare LF in the message; SMTP wants CRLF")
			}
			p := parse(t, raw)
			wantHeaders := map[string]string{
				"From":         "orders@example.com",
				"To":           "ada@example.com",
				"Subject":      "Your order 0193a5b2-7c1d-7aaa-8bbb-0123456789ab is confirmed",
				"Message-Id":   "<evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60@jethook>",
				"Mime-Version": "1.0",
				"Content-Type": "text/plain; charset=utf-8",
			}
			for k, want := range wantHeaders {
				if got := p.header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if d, err := p.header.Date(); err != nil || !d.Equal(date) {
				t.Errorf("Date = %v (%v), want %v", d, err, date)
			}
			for _, want := range tt.wantInBody {
				if !strings.Contains(p.body, want) {
					t.Errorf("body lacks %q:\n%s", want, p.body)
				}
			}
		})
	}
}

func TestRenderEncodesNonASCIISubject(t *testing.T) {
	m := NewMessage(sampleEvent())
	m.Subject = "Bestellung für Ada\r\nBcc: eve@example.com"
	raw := m.Render("orders@example.com", time.Now())
	p := parse(t, raw)
	if got := p.header.Get("Bcc"); got != "" {
		t.Fatalf("a Subject injected the header Bcc: %q", got)
	}
	dec, err := new(mime.WordDecoder).DecodeHeader(p.header.Get("Subject"))
	if err != nil || !strings.HasPrefix(dec, "Bestellung für Ada") {
		t.Errorf("Subject decodes to %q (%v)", dec, err)
	}
}
