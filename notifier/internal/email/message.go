package email

import (
	"bytes"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"time"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/money"
)

// Message is one confirmation email, independent of how it is delivered.
type Message struct {
	EventID string
	OrderID string
	To      string
	Subject string
	Body    string
}

// NewMessage builds the confirmation email of a paid order.
func NewMessage(ev event.OrderPaid) Message {
	d := ev.Data
	body := fmt.Sprintf("Hello,\n\n"+
		"thank you for your order. We have received your payment and your order is confirmed.\n\n"+
		"Order:    %s\n"+
		"Product:  %s\n"+
		"Quantity: %d\n"+
		"Amount:   %s\n\n"+
		"Kind regards,\nthe shop\n",
		d.OrderID, d.ProductName, d.Quantity, money.Format(d.AmountMinor, d.Currency))
	return Message{
		EventID: ev.ID,
		OrderID: d.OrderID,
		To:      d.CustomerEmail,
		Subject: "Your order " + d.OrderID + " is confirmed",
		Body:    body,
	}
}

// MessageID is the Message-ID header: derived from the event id, so that
// mail systems can recognize a resent copy of the same confirmation.
func (m Message) MessageID() string { return "<" + m.EventID + "@jethook>" }

// Render returns the RFC 5322 text of m with CRLF line endings. Every header
// value comes from a validated event (addresses and product names cannot
// contain control characters), and the Subject is Q-encoded when it is not
// plain ASCII, so no value can start a header of its own. The body is
// quoted-printable, which keeps any product name intact over 7-bit relays.
func (m Message) Render(from string, date time.Time) []byte {
	var b bytes.Buffer
	header := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	header("From", from)
	header("To", m.To)
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", date.Format(time.RFC1123Z))
	header("Message-ID", m.MessageID())
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	// Writing to a bytes.Buffer cannot fail.
	_, _ = qp.Write([]byte(m.Body))
	_ = qp.Close()
	return b.Bytes()
}
