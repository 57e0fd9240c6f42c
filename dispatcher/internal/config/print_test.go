package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jethook/jethook/dispatcher/internal/config"
)

// TestConfigPrintsNoCredential: a Config printed whole, as a debugging
// log line might, shows neither the admin token nor the secrets key.
func TestConfigPrintsNoCredential(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
		out := fmt.Sprintf(format, cfg)
		if strings.Contains(out, adminToken) || strings.Contains(out, fmt.Sprintf("%x", [32]byte(cfg.SecretsKey))) ||
			strings.Contains(out, fmt.Sprint([32]byte(cfg.SecretsKey))) || strings.Contains(out, strings.TrimPrefix(secretA, "whsec_")) {
			t.Errorf("%s shows a credential: %s", format, out)
		}
	}
}
