package config

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"no userinfo", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"password", "nats://orders:s3cret@nats:4222", "nats://orders:xxxxx@nats:4222"},
		{"empty password", "nats://orders:@nats:4222", "nats://orders:xxxxx@nats:4222"},
		{"token", "nats://s3cret@nats:4222", "nats://xxxxx@nats:4222"},
		{"escaped characters in the password", "nats://orders:s3%2Fc%40ret@nats:4222", "nats://orders:xxxxx@nats:4222"},
		{"https with path and query", "https://hook:s3cret@example.com/in?x=1", "https://hook:xxxxx@example.com/in?x=xxxxx"},
		{"a token in the query", "https://example.com/in?token=s3cret&v=2", "https://example.com/in?token=xxxxx&v=xxxxx"},
		{"a bare token as the query", "https://example.com/in?s3cret", "https://example.com/in?xxxxx"},
		{"an empty query value", "https://example.com/in?token=", "https://example.com/in?token=xxxxx"},
		{"a query on a URL that does not parse", "https://example.com:port/in?token=s3cret", "https://example.com:port/in?xxxxx"},
		{"list", "nats://a:s3cret@n1:4222, tls://n2:4222,nats://s3cret@n3:4222", "nats://a:xxxxx@n1:4222,tls://n2:4222,nats://xxxxx@n3:4222"},
		{"bad port", "nats://user:s3cret@127.0.0.1:notaport", "nats://user:xxxxx@127.0.0.1:notaport"},
		{"bad port, token", "nats://s3cret@127.0.0.1:notaport", "nats://xxxxx@127.0.0.1:notaport"},
		{"no scheme", "user:s3cret@127.0.0.1:4222", "user:xxxxx@127.0.0.1:4222"},
		{"unescaped slash in the password", "nats://user:s3/cret@nats:4222", "nats://user:xxxxx@nats:4222"},
		{"unescaped @ in the password", "nats://user:s3@cret@nats:4222", "nats://user:xxxxx@nats:4222"},
		{"unescaped comma in the password", "nats://user:1234,s3cret@nats:4222", "nats://user:xxxxx@nats:4222"},
		{"a control character", "nats://user:s3cret@nats\x7f:4222", "nats://user:xxxxx@nats\x7f:4222"},
		{"not a URL at all", "banana", "banana"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RedactURL(tt.raw)
			if got != tt.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tt.raw, got, tt.want)
			}
			if strings.Contains(got, "s3cret") || strings.Contains(got, "s3%2Fc") {
				t.Fatalf("RedactURL(%q) = %q shows the password", tt.raw, got)
			}
		})
	}
}

// TestURLErrorsHideThePassword: an invalid URL variable is named in its
// error with its password or token masked (issue: the service's start-up
// line printed NATS_URL's password).
func TestURLErrorsHideThePassword(t *testing.T) {
	tests := []struct {
		name, variable, value string
	}{
		{"NATS_URL with a bad port", "NATS_URL", "nats://user:s3cret@127.0.0.1:notaport"},
		{"NATS_URL with a bad scheme", "NATS_URL", "http://user:s3cret@127.0.0.1:4222"},
		{"NATS_URL list with a token", "NATS_URL", "nats://n1:4222,nats://s3cret@:bad"},
		{"NATS_URL with a comma in the password", "NATS_URL", "nats://user:12,s3cret@n1:4222"},
		{"webhook URL with a bad port", "NOTIFICATION_WEBHOOK_URL", "http://user:s3cret@127.0.0.1:notaport/hook"},
		{"webhook URL with a bad scheme", "NOTIFICATION_WEBHOOK_URL", "ftp://s3cret@example.com/hook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(func(k string) string {
				if k == tt.variable {
					return tt.value
				}
				return ""
			})
			e.LoadCommon()
			e.URL("NOTIFICATION_WEBHOOK_URL", "http://127.0.0.1:8081/webhook/order-paid", "http", "https")
			err := e.Err()
			if err == nil || !strings.Contains(err.Error(), "invalid "+tt.variable+"=") || !strings.Contains(err.Error(), Mask) {
				t.Fatalf("Err = %v, want an error naming %s with the password masked", err, tt.variable)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("Err = %v shows the password", err)
			}
		})
	}
}

func TestSecretDoesNotPrint(t *testing.T) {
	s := Secret("s3cret")
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "password", s, "nats", NATS{NATSPassword: s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, NATS{NATSPassword: s}, NATS{NATSPassword: s}, s), logs.String()} {
		if strings.Contains(out, "s3cret") || !strings.Contains(out, Mask) {
			t.Fatalf("a Secret printed as %q", out)
		}
	}
	if string(s) != "s3cret" {
		t.Fatal("the value itself is lost")
	}
}
