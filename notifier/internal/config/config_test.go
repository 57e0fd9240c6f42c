package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testSecret is a throwaway secret used only by these tests.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(map[string]string{"WEBHOOK_SECRET": testSecret}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"NATSURL", c.NATSURL, "nats://127.0.0.1:4222"},
		{"StreamReplicas", c.StreamReplicas, 1},
		{"LogFormat", c.LogFormat, "json"},
		{"Addr", c.Addr, "127.0.0.1:8081"},
		{"secrets", len(c.Secrets), 1},
		{"SMTPAddr", c.SMTPAddr, ""},
		{"SMTPFrom", c.SMTPFrom, "orders@example.com"},
		{"SMTPTimeout", c.SMTPTimeout, 10 * time.Second},
		{"ProcessedTTL", c.ProcessedTTL, 72 * time.Hour},
		{"EmailRetryBase", c.EmailRetryBase, time.Second},
		{"EmailRetryMax", c.EmailRetryMax, 5 * time.Minute},
		{"SMTPDataTimeout", c.SMTPDataTimeout, 10 * time.Minute},
		{"EmailConcurrency", c.EmailConcurrency, 16},
		{"EmailWorkers", c.EmailWorkers(), 64},
		{"EmailMaxAttempts", c.EmailMaxAttempts, 30},
		{"AckWait", c.Timings().AckWait, 30 * time.Second},
		{"Heartbeat", c.Timings().Heartbeat, 7500 * time.Millisecond},
		{"MessageTimeout", c.Timings().MessageTimeout, 4*(10*time.Minute+80*time.Second) + 10*time.Second},
		{"ClaimLease", c.ClaimLease(), 30 * time.Second},
		{"CommitLease", c.CommitLease(), 11 * time.Minute},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadValues(t *testing.T) {
	c, err := Load(env(map[string]string{
		"WEBHOOK_SECRET":   testSecret + ", whsec_" + strings.Repeat("A", 24),
		"SMTP_ADDR":        "mail.internal:2525",
		"SMTP_FROM":        "shop@example.org",
		"SMTP_TIMEOUT":     "3s",
		"PROCESSED_TTL":    "240h",
		"EMAIL_RETRY_BASE": "50ms",
		"EMAIL_RETRY_MAX":  "2s",
		"NOTIFIER_ADDR":    "0.0.0.0:9000",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(c.Secrets) != 2 || c.SMTPAddr != "mail.internal:2525" || c.SMTPFrom != "shop@example.org" ||
		c.SMTPTimeout != 3*time.Second || c.ProcessedTTL != 240*time.Hour ||
		c.EmailRetryBase != 50*time.Millisecond || c.EmailRetryMax != 2*time.Second || c.Addr != "0.0.0.0:9000" {
		t.Errorf("unexpected config %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		vars  map[string]string
		wants string
	}{
		{"missing secret", map[string]string{"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET"},
		{"secret without prefix", map[string]string{"WEBHOOK_SECRET": "hunter2hunter2hunter2"}, "WEBHOOK_SECRET"},
		{"empty rotation entry", map[string]string{"WEBHOOK_SECRET": testSecret + ","}, "WEBHOOK_SECRET"},
		{"nats url", map[string]string{"NATS_URL": "http://x"}, "NATS_URL"},
		{"replicas", map[string]string{"STREAM_REPLICAS": "7"}, "STREAM_REPLICAS"},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"addr", map[string]string{"NOTIFIER_ADDR": "8081"}, "NOTIFIER_ADDR"},
		{"smtp addr without port", map[string]string{"SMTP_ADDR": "mail.internal"}, "SMTP_ADDR"},
		{"smtp addr without host", map[string]string{"SMTP_ADDR": ":25"}, "SMTP_ADDR"},
		{"smtp from", map[string]string{"SMTP_FROM": "Shop <shop@example.org>"}, "SMTP_FROM"},
		{"smtp timeout", map[string]string{"SMTP_TIMEOUT": "banana"}, "SMTP_TIMEOUT"},
		{"processed ttl too short", map[string]string{"PROCESSED_TTL": "30s"}, "PROCESSED_TTL"},
		{"processed ttl too long", map[string]string{"PROCESSED_TTL": "9000h"}, "PROCESSED_TTL"},
		{"processed ttl under the claim", map[string]string{"PROCESSED_TTL": "80s"}, "PROCESSED_TTL"},
		{"retry base", map[string]string{"EMAIL_RETRY_BASE": "-1s"}, "EMAIL_RETRY_BASE"},
		{"retry max", map[string]string{"EMAIL_RETRY_MAX": "soon"}, "EMAIL_RETRY_MAX"},
		{"retry max below base", map[string]string{"EMAIL_RETRY_BASE": "10s", "EMAIL_RETRY_MAX": "1s"}, "EMAIL_RETRY_MAX"},
		{"concurrency", map[string]string{"EMAIL_CONCURRENCY": "0"}, "EMAIL_CONCURRENCY"},
		{"max attempts", map[string]string{"EMAIL_MAX_ATTEMPTS": "many"}, "EMAIL_MAX_ATTEMPTS"},
		{"data timeout", map[string]string{"SMTP_DATA_TIMEOUT": "1h"}, "SMTP_DATA_TIMEOUT"},
		{"processed ttl under the commit lease", map[string]string{"SMTP_DATA_TIMEOUT": "20m", "PROCESSED_TTL": "15m"}, "PROCESSED_TTL"},
		{"tls mode", map[string]string{"SMTP_TLS": "sometimes"}, "SMTP_TLS"},
		{"username without password", map[string]string{"SMTP_ADDR": "mail.internal:587", "SMTP_USERNAME": "shop"}, "SMTP_PASSWORD"},
		{"password in the clear", map[string]string{"SMTP_ADDR": "mail.internal:587", "SMTP_USERNAME": "shop", "SMTP_PASSWORD": "pw", "SMTP_TLS": "none"}, "SMTP_TLS"},
		{"password opportunistically", map[string]string{"SMTP_ADDR": "127.0.0.1:1025", "SMTP_USERNAME": "shop", "SMTP_PASSWORD": "pw"}, "SMTP_TLS"},
		{"tls ca unreadable", map[string]string{"SMTP_TLS_CA": "/nonexistent/ca.pem"}, "SMTP_TLS_CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"WEBHOOK_SECRET": testSecret}
			for k, v := range tt.vars {
				vars[k] = v
			}
			_, err := Load(env(vars))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wants) {
				t.Errorf("error %q does not name %s", err, tt.wants)
			}
			if lines := strings.Split(err.Error(), "\n"); len(lines) != 1 {
				t.Errorf("want one line per bad variable, got %q", lines)
			}
		})
	}
}

// TestSMTPTLSDefault: a relay on loopback (a local catcher) is reached
// with opportunistic STARTTLS, any other with STARTTLS required.
func TestSMTPTLSDefault(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:1025": "opportunistic", "localhost:25": "opportunistic", "[::1]:25": "opportunistic",
		"mail.internal:587": "starttls", "10.0.0.5:25": "starttls", "": "starttls",
	} {
		c, err := Load(env(map[string]string{"WEBHOOK_SECRET": testSecret, "SMTP_ADDR": addr}))
		if err != nil {
			t.Fatalf("SMTP_ADDR=%s: %v", addr, err)
		}
		if c.SMTPTLS != want {
			t.Errorf("SMTP_ADDR=%s: SMTP_TLS defaults to %s, want %s", addr, c.SMTPTLS, want)
		}
	}
}

func TestLoadNeverPrintsTheSMTPPassword(t *testing.T) {
	const pw = "s3cret-smtp-pw-4f1e"
	_, err := Load(env(map[string]string{"WEBHOOK_SECRET": testSecret, "SMTP_ADDR": "mail.internal:587",
		"SMTP_USERNAME": "shop", "SMTP_PASSWORD": pw, "SMTP_TLS": "none"}))
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("Load = %v, want an error without the password", err)
	}
}

func TestLoadNeverPrintsTheSecret(t *testing.T) {
	bad := "whsec_!!not-base64-but-secret!!"
	_, err := Load(env(map[string]string{"WEBHOOK_SECRET": bad}))
	if err == nil || strings.Contains(err.Error(), "not-base64-but-secret") {
		t.Fatalf("error %v must name WEBHOOK_SECRET without its value", err)
	}
}

func TestPrintedConfigHidesTheSMTPPassword(t *testing.T) {
	const pw = "s3cret-smtp-pw-8c3a"
	c, err := Load(env(map[string]string{"WEBHOOK_SECRET": testSecret, "SMTP_ADDR": "mail.internal:587",
		"SMTP_USERNAME": "shop", "SMTP_PASSWORD": pw}))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(c)} {
		if strings.Contains(out, pw) {
			t.Fatalf("printing the config shows the password: %s", out)
		}
	}
}
