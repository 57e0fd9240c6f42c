package config_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/config"
)

const (
	secretA    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB    = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	adminToken = "0123456789abcdef0123456789abcdef" // exactly the minimum length
	secretsKey = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
)

// required holds the variables without a default; the tests add them
// unless a case is about one of them.
var required = map[string]string{
	"WEBHOOK_SECRET": secretA, "ADMIN_TOKEN": adminToken, "SECRETS_KEY": secretsKey,
	// The default NOTIFICATION_WEBHOOK_URL is on loopback, which the SSRF
	// guard refuses unless allowed.
	"ALLOWED_NETWORKS": "127.0.0.0/8",
}

func env(vars map[string]string) func(string) string {
	return func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return required[name]
	}
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"NATSURL", cfg.NATSURL, "nats://127.0.0.1:4222"},
		{"StreamReplicas", cfg.StreamReplicas, 1},
		{"LogFormat", cfg.LogFormat, "json"},
		{"Addr", cfg.Addr, "127.0.0.1:8082"},
		{"WebhookURL", cfg.WebhookURL, "http://127.0.0.1:8081/webhook/order-paid"},
		{"Secrets", len(cfg.Secrets), 1},
		{"RetryBase", cfg.RetryBase, time.Second},
		{"RetryMax", cfg.RetryMax, time.Hour},
		{"MaxDeliver", cfg.MaxDeliver, 15},
		{"HTTPTimeout", cfg.HTTPTimeout, 5 * time.Second},
		{"Concurrency", cfg.Concurrency, 64},
		{"BreakerFailures", cfg.BreakerFailures, 10},
		{"DisableAfter", cfg.DisableAfter, 120 * time.Hour},
		{"AdminToken", string(cfg.AdminToken), adminToken},
		{"SecretsKey", cfg.SecretsKey[0], byte(0xab)},
		{"AllowedNetworks", fmt.Sprint(cfg.AllowedNetworks), "[127.0.0.0/8]"},
		{"SecretTexts", fmt.Sprint(len(cfg.SecretTexts), string(cfg.SecretTexts[0])), "1" + secretA},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoadValues(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{
		"NATS_URL":                 "nats://nats.internal:4222",
		"STREAM_REPLICAS":          "3",
		"LOG_FORMAT":               "text",
		"DISPATCHER_ADDR":          "0.0.0.0:9000",
		"NOTIFICATION_WEBHOOK_URL": "https://hooks.example.com/in",
		"WEBHOOK_SECRET":           secretA + ", " + secretB,
		"RETRY_BASE":               "50ms",
		"RETRY_MAX":                "50ms",
		"MAX_DELIVER":              "1",
		"HTTP_TIMEOUT":             "100ms",
		"DISPATCH_CONCURRENCY":     "256",
		"BREAKER_FAILURES":         "3",
		"DISABLE_AFTER":            "90s",
		"ALLOWED_NETWORKS":         " 10.1.2.3/8 , fd00::/8",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.BreakerFailures != 3 || cfg.DisableAfter != 90*time.Second || fmt.Sprint(cfg.AllowedNetworks) != "[10.0.0.0/8 fd00::/8]" {
		t.Fatalf("BreakerFailures %d, DisableAfter %s, AllowedNetworks %v", cfg.BreakerFailures, cfg.DisableAfter, cfg.AllowedNetworks)
	}
	if got := fmt.Sprint(cfg.SecretTexts); got != "[xxxxx xxxxx]" {
		t.Errorf("SecretTexts print as %s, want redacted", got)
	}
	if cfg.NATSURL != "nats://nats.internal:4222" || cfg.StreamReplicas != 3 || cfg.LogFormat != "text" ||
		cfg.Addr != "0.0.0.0:9000" || cfg.WebhookURL != "https://hooks.example.com/in" || len(cfg.Secrets) != 2 ||
		cfg.RetryBase != 50*time.Millisecond || cfg.RetryMax != 50*time.Millisecond || cfg.MaxDeliver != 1 ||
		cfg.HTTPTimeout != 100*time.Millisecond || cfg.Concurrency != 256 {
		t.Fatalf("Load = %+v", cfg)
	}
}

func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name  string
		vars  map[string]string
		names string // the variable the error must name
	}{
		{"missing secret", map[string]string{"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET"},
		{"secret without prefix", map[string]string{"WEBHOOK_SECRET": "hunter2-hunter2-hunter2"}, "WEBHOOK_SECRET"},
		{"second secret broken", map[string]string{"WEBHOOK_SECRET": secretA + ",whsec_!!notbase64!!"}, "WEBHOOK_SECRET"},
		{"empty secret entry", map[string]string{"WEBHOOK_SECRET": secretA + ",,"}, "WEBHOOK_SECRET"},
		{"nats url scheme", map[string]string{"NATS_URL": "http://127.0.0.1:4222"}, "NATS_URL"},
		{"replicas", map[string]string{"STREAM_REPLICAS": "0"}, "STREAM_REPLICAS"},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"addr", map[string]string{"DISPATCHER_ADDR": "8082"}, "DISPATCHER_ADDR"},
		{"webhook url scheme", map[string]string{"NOTIFICATION_WEBHOOK_URL": "ftp://example.com/x"}, "NOTIFICATION_WEBHOOK_URL"},
		{"webhook url relative", map[string]string{"NOTIFICATION_WEBHOOK_URL": "/webhook/order-paid"}, "NOTIFICATION_WEBHOOK_URL"},
		{"retry base not a duration", map[string]string{"RETRY_BASE": "banana"}, "RETRY_BASE"},
		{"retry base too small", map[string]string{"RETRY_BASE": "1ms"}, "RETRY_BASE"},
		{"retry base too large", map[string]string{"RETRY_BASE": "2h", "RETRY_MAX": "3h"}, "RETRY_BASE"},
		{"retry max not a duration", map[string]string{"RETRY_MAX": "forever"}, "RETRY_MAX"},
		{"retry max below base", map[string]string{"RETRY_BASE": "2s", "RETRY_MAX": "1s"}, "RETRY_MAX"},
		{"attempt log shorter than two retry waits", map[string]string{"RETRY_MAX": "1h", "ATTEMPT_LOG_MAX_AGE": "90m"}, "ATTEMPT_LOG_MAX_AGE"},
		{"attempt log shorter than two breaker pauses", map[string]string{"RETRY_MAX": "1h", "ATTEMPT_LOG_MAX_AGE": "3h", "BREAKER_COOLOFF_MAX": "24h"}, "ATTEMPT_LOG_MAX_AGE"},
		{"max deliver zero", map[string]string{"MAX_DELIVER": "0"}, "MAX_DELIVER"},
		{"max deliver too large", map[string]string{"MAX_DELIVER": "1001"}, "MAX_DELIVER"},
		{"max deliver not a number", map[string]string{"MAX_DELIVER": "ten"}, "MAX_DELIVER"},
		{"http timeout too small", map[string]string{"HTTP_TIMEOUT": "10ms"}, "HTTP_TIMEOUT"},
		{"http timeout too large", map[string]string{"HTTP_TIMEOUT": "6m"}, "HTTP_TIMEOUT"},
		{"concurrency zero", map[string]string{"DISPATCH_CONCURRENCY": "0"}, "DISPATCH_CONCURRENCY"},
		{"concurrency too large", map[string]string{"DISPATCH_CONCURRENCY": "257"}, "DISPATCH_CONCURRENCY"},
		{"breaker failures zero", map[string]string{"BREAKER_FAILURES": "0"}, "BREAKER_FAILURES"},
		{"breaker failures not a number", map[string]string{"BREAKER_FAILURES": "many"}, "BREAKER_FAILURES"},
		{"disable after in days", map[string]string{"DISABLE_AFTER": "5d"}, "DISABLE_AFTER"},
		{"disable after too long", map[string]string{"DISABLE_AFTER": "2161h"}, "DISABLE_AFTER"},
		{"missing admin token", map[string]string{"ADMIN_TOKEN": ""}, "ADMIN_TOKEN"},
		{"short admin token", map[string]string{"ADMIN_TOKEN": adminToken[:31]}, "ADMIN_TOKEN"},
		{"admin token with a space", map[string]string{"ADMIN_TOKEN": adminToken + " x"}, "ADMIN_TOKEN"},
		{"admin token not ASCII", map[string]string{"ADMIN_TOKEN": adminToken + "é"}, "ADMIN_TOKEN"},
		{"missing secrets key", map[string]string{"SECRETS_KEY": ""}, "SECRETS_KEY"},
		{"secrets key 16 bytes", map[string]string{"SECRETS_KEY": "q83vEjRWeJCrze8SNFZ4kA=="}, "SECRETS_KEY"},
		{"secrets key not base64", map[string]string{"SECRETS_KEY": "not base64 at all, but forty-four chars long"}, "SECRETS_KEY"},
		{"secrets key url-safe", map[string]string{"SECRETS_KEY": "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJ_-"}, "SECRETS_KEY"},
		{"allowed networks bare address", map[string]string{"ALLOWED_NETWORKS": "127.0.0.1"}, "ALLOWED_NETWORKS"},
		{"allowed networks empty entry", map[string]string{"ALLOWED_NETWORKS": "127.0.0.0/8,"}, "ALLOWED_NETWORKS"},
		{"webhook url refused", map[string]string{"ALLOWED_NETWORKS": ""}, "NOTIFICATION_WEBHOOK_URL"},
		{"webhook url metadata address", map[string]string{"NOTIFICATION_WEBHOOK_URL": "http://169.254.169.254/latest"}, "NOTIFICATION_WEBHOOK_URL"},
		{"webhook url with password", map[string]string{"NOTIFICATION_WEBHOOK_URL": "https://u:hunter2@hooks.example.com/in"}, "NOTIFICATION_WEBHOOK_URL"},
		{"refused webhook url with a token in its query", map[string]string{"NOTIFICATION_WEBHOOK_URL": "http://169.254.169.254/hook?token=hunter2"}, "NOTIFICATION_WEBHOOK_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load(env(tt.vars))
			if err == nil {
				t.Fatalf("Load succeeded, want an error naming %s", tt.names)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.names) {
				t.Errorf("error %q does not name %s", msg, tt.names)
			}
			if lines := strings.Split(msg, "\n"); len(lines) != 1 {
				t.Errorf("got %d error lines, want 1: %q", len(lines), msg)
			}
			for _, name := range []string{"WEBHOOK_SECRET", "ADMIN_TOKEN", "SECRETS_KEY"} {
				v := tt.vars[name]
				if v == "" {
					v = required[name]
				}
				if strings.Contains(msg, v) {
					t.Errorf("error %q reveals %s", msg, name)
				}
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q reveals a URL's password", msg)
			}
		})
	}
}

func TestLoadReportsEveryBadVariable(t *testing.T) {
	_, err := config.Load(env(map[string]string{
		"WEBHOOK_SECRET": "", "ADMIN_TOKEN": "", "SECRETS_KEY": "", "ALLOWED_NETWORKS": "",
		"RETRY_BASE":   "banana",
		"MAX_DELIVER":  "0",
		"HTTP_TIMEOUT": "1h",
	}))
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for _, name := range []string{"WEBHOOK_SECRET", "RETRY_BASE", "MAX_DELIVER", "HTTP_TIMEOUT", "ADMIN_TOKEN", "SECRETS_KEY", "NOTIFICATION_WEBHOOK_URL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if strings.Contains(err.Error(), "RETRY_MAX") {
		t.Errorf("error %q blames RETRY_MAX for a bad RETRY_BASE", err)
	}
}
