package webhook_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/jethook/jethook/shared/webhook"
)

// Fixed inputs shared by the tests. secretA, msgID, ts0 and body0 are the
// official Standard Webhooks test vector.
const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	secretC = "whsec_amV0aG9vay1nb2xkZW4tdmVjdG9yLWtleQ=="
	msgID   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	ts0     = 1614265330
	body0   = `{"test": 2432232314}`
	sig0    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t testing.TB, s string) webhook.Secret {
	t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return sec
}

func fixedNow(unix int64) func() time.Time {
	return func() time.Time { return time.Unix(unix, 0) }
}

// The expected values were computed independently with Python's hmac module.
func TestGoldenVectors(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		id      string
		ts      int64
		body    string
		want    string
	}{
		{
			name:    "official standard webhooks vector",
			secrets: []string{secretA},
			id:      msgID, ts: ts0, body: body0,
			want: sig0,
		},
		{
			name:    "32-byte key and empty body",
			secrets: []string{secretB},
			id:      "evt_01", ts: 1700000000, body: "",
			want: "v1,CoU3QRvMx1rnZlSLP3cW3e/Ulgu3t1VUWJvM1hsEXDY=",
		},
		{
			name:    "padded key and non-ASCII body with newline",
			secrets: []string{secretC},
			id:      "msg_2", ts: 1234567890, body: "{\"amount\":\"12.50\",\"note\":\"caf\u00e9\n\"}",
			want: "v1,avixAURWQQs8CZmdpG/tZ+pTv8o0H4cWfpI5WQrlfA8=",
		},
		{
			name:    "binary body",
			secrets: []string{secretB},
			id:      "x", ts: 0, body: "\x00\xff\x01",
			want: "v1,4957WBP/xfdMD4GiU5gD5Yck3ePWh42PJXhd6Q8QOQA=",
		},
		{
			name:    "two secrets during rotation",
			secrets: []string{secretA, secretB},
			id:      "msg_rot", ts: 1700000123, body: `{"a":1}`,
			want: "v1,oGRUrb5laEUjVnjGhKDhqU+DVbGGj7lUnBNBxYvhk3Y= v1,Icm6UdcFz5yMJM833kYPpABKJoffelsqQWSGQ6SPGq4=",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secrets := make([]webhook.Secret, len(tt.secrets))
			for i, s := range tt.secrets {
				secrets[i] = mustSecret(t, s)
			}
			got := webhook.Sign(secrets, tt.id, time.Unix(tt.ts, 0), []byte(tt.body))
			if got != tt.want {
				t.Fatalf("Sign = %q, want %q", got, tt.want)
			}
			v := webhook.Verifier{Secrets: secrets, Now: fixedNow(tt.ts)}
			if err := v.Verify(tt.id, strconv.FormatInt(tt.ts, 10), tt.want, []byte(tt.body)); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestInteropOfficialVerifiesOurs(t *testing.T) {
	now := time.Now()
	body := []byte(`{"type":"order.created","data":{"id":42}}`)
	for name, secrets := range map[string][]string{"one secret": {secretA}, "two secrets": {secretB, secretA}} {
		t.Run(name, func(t *testing.T) {
			var ours []webhook.Secret
			for _, s := range secrets {
				ours = append(ours, mustSecret(t, s))
			}
			h := http.Header{}
			webhook.SetHeaders(h, ours, "msg_interop", now, body)

			wh, err := standardwebhooks.NewWebhook(secretA)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(body, h); err != nil {
				t.Fatalf("official Verify rejected our headers %v: %v", h, err)
			}
		})
	}
}

func TestInteropOursVerifiesOfficial(t *testing.T) {
	now := time.Now()
	body := []byte(`{"type":"order.created","data":{"id":42}}`)
	wh, err := standardwebhooks.NewWebhook(secretB)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign("msg_interop", now, body)
	if err != nil {
		t.Fatal(err)
	}
	v := webhook.Verifier{Secrets: []webhook.Secret{mustSecret(t, secretB)}}
	if err := v.Verify("msg_interop", strconv.FormatInt(now.Unix(), 10), sig, body); err != nil {
		t.Fatalf("Verify rejected official signature %q: %v", sig, err)
	}
	if got := webhook.Sign(v.Secrets, "msg_interop", now, body); got != sig {
		t.Fatalf("Sign = %q, official Sign = %q", got, sig)
	}
}

// The official library signs a request; both of our middlewares, on a
// real server, accept it and hand its body on, and refuse it once its body
// is changed in transit.
func TestInteropMiddlewareVerifiesOfficial(t *testing.T) {
	official, err := standardwebhooks.NewWebhook(secretB)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"order.paid","data":{"order_id":"42"}}`)
	officialRequest := func(t *testing.T, url string, sent []byte) *http.Request {
		now := time.Now()
		sig, err := official.Sign("msg_interop", now, body)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(sent))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(webhook.HeaderID, "msg_interop")
		req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		req.Header.Set(webhook.HeaderSignature, sig)
		return req
	}
	// The verifier knows an older secret too, as during a rotation.
	v := webhook.Verifier{Secrets: []webhook.Secret{mustSecret(t, secretA), mustSecret(t, secretB)}}
	for _, ad := range adapters {
		t.Run(ad.name, func(t *testing.T) {
			url := ad.serve(t, v)
			got := post(t, officialRequest(t, url, body))
			var e echo
			if got.status != 200 || json.Unmarshal(got.body, &e) != nil || e.ID != "msg_interop" || e.Body != string(body) {
				t.Fatalf("officially signed webhook: %d %s", got.status, got.body)
			}
			tampered := bytes.Replace(body, []byte("42"), []byte("43"), 1)
			if got := post(t, officialRequest(t, url, tampered)); got.status != 403 {
				t.Fatalf("officially signed webhook with a changed body: %d %s, want 403", got.status, got.body)
			}
		})
	}
}

// A request signed by SetHeaders crosses a real HTTP connection, with
// whatever that does to header names, and the official library accepts it.
func TestInteropOfficialVerifiesOurRequest(t *testing.T) {
	official, err := standardwebhooks.NewWebhook(secretA)
	if err != nil {
		t.Fatal(err)
	}
	verdict := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = official.Verify(body, r.Header)
		}
		verdict <- err
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	body := []byte(`{"type":"order.paid","data":{"order_id":"42"}}`)
	req, err := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	// A rotation's second signature must not disturb the official verifier.
	webhook.SetHeaders(req.Header, []webhook.Secret{mustSecret(t, secretB), mustSecret(t, secretA)}, "msg_interop", time.Now(), body)
	if got := post(t, req); got.status != http.StatusNoContent {
		t.Fatalf("status %d", got.status)
	}
	if err := <-verdict; err != nil {
		t.Fatalf("official Verify rejected our request: %v", err)
	}
}

func TestVerifyRejections(t *testing.T) {
	type input struct {
		id, ts, sig string
		body        []byte
	}
	valid := func() input {
		return input{id: msgID, ts: strconv.Itoa(ts0), sig: sig0, body: []byte(body0)}
	}
	tests := []struct {
		name    string
		mutate  func(*input)
		secrets []string
		want    error
	}{
		{"missing id", func(in *input) { in.id = "" }, nil, webhook.ErrMissingHeader},
		{"missing timestamp", func(in *input) { in.ts = "" }, nil, webhook.ErrMissingHeader},
		{"missing signature", func(in *input) { in.sig = "" }, nil, webhook.ErrMissingHeader},
		{"wrong secret", func(*input) {}, []string{secretB}, webhook.ErrNoMatchingSignature},
		{"tampered body", func(in *input) { in.body = []byte(`{"test": 2432232315}`) }, nil, webhook.ErrNoMatchingSignature},
		{"body with trailing newline", func(in *input) { in.body = append(in.body, '\n') }, nil, webhook.ErrNoMatchingSignature},
		{"tampered id", func(in *input) { in.id = msgID + "x" }, nil, webhook.ErrNoMatchingSignature},
		{"tampered timestamp", func(in *input) { in.ts = strconv.Itoa(ts0 + 1) }, nil, webhook.ErrNoMatchingSignature},
		{"stale", func(in *input) { in.ts = strconv.Itoa(ts0 - 301) }, nil, webhook.ErrTimestampTooOld},
		{"future", func(in *input) { in.ts = strconv.Itoa(ts0 + 301) }, nil, webhook.ErrTimestampTooNew},
		{"minimum int64 timestamp", func(in *input) { in.ts = "-9223372036854775808" }, nil, webhook.ErrTimestampTooOld},
		{"maximum int64 timestamp", func(in *input) { in.ts = "9223372036854775807" }, nil, webhook.ErrTimestampTooNew},
		{"garbage signature", func(in *input) { in.sig = "not a signature at all" }, nil, webhook.ErrNoMatchingSignature},
		{"v1 with garbage value", func(in *input) { in.sig = "v1,garbage" }, nil, webhook.ErrNoMatchingSignature},
		{"v1 with right length wrong value", func(in *input) { in.sig = "v1," + strings.Repeat("A", 43) + "=" }, nil, webhook.ErrNoMatchingSignature},
		{"only unknown versions", func(in *input) { in.sig = "v1a," + sig0[3:] + " v2," + sig0[3:] }, nil, webhook.ErrNoMatchingSignature},
		{"signature without version", func(in *input) { in.sig = sig0[3:] }, nil, webhook.ErrNoMatchingSignature},
		{"non-integer timestamp", func(in *input) { in.ts = "1614265330.5" }, nil, webhook.ErrInvalidHeader},
		{"timestamp with letters", func(in *input) { in.ts = "yesterday" }, nil, webhook.ErrInvalidHeader},
		{"timestamp out of int64 range", func(in *input) { in.ts = "99999999999999999999" }, nil, webhook.ErrInvalidHeader},
		{"timestamp with leading zero", func(in *input) { in.ts = "0" + strconv.Itoa(ts0) }, nil, webhook.ErrInvalidHeader},
		{"timestamp with plus sign", func(in *input) { in.ts = "+" + strconv.Itoa(ts0) }, nil, webhook.ErrInvalidHeader},
		{"timestamp with space", func(in *input) { in.ts = " " + strconv.Itoa(ts0) }, nil, webhook.ErrInvalidHeader},
		{"oversized signature header", func(in *input) { in.sig = sig0 + strings.Repeat(" ", 4097) }, nil, webhook.ErrInvalidHeader},
		{"oversized id", func(in *input) { in.id = strings.Repeat("a", 257) }, nil, webhook.ErrInvalidHeader},
		{"id with space", func(in *input) { in.id = "msg 1" }, nil, webhook.ErrInvalidHeader},
		{"id with newline", func(in *input) { in.id = "msg\n1" }, nil, webhook.ErrInvalidHeader},
		{"id with non-ASCII", func(in *input) { in.id = "msg_\u00e9" }, nil, webhook.ErrInvalidHeader},
		{"no secrets", func(*input) {}, []string{}, webhook.ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid()
			tt.mutate(&in)
			var secrets []webhook.Secret
			if tt.secrets == nil {
				secrets = []webhook.Secret{mustSecret(t, secretA)}
			}
			for _, s := range tt.secrets {
				secrets = append(secrets, mustSecret(t, s))
			}
			v := webhook.Verifier{Secrets: secrets, Now: fixedNow(ts0)}
			err := v.Verify(in.id, in.ts, in.sig, in.body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyZeroSecretIsUnusable(t *testing.T) {
	v := webhook.Verifier{Secrets: []webhook.Secret{{}}, Now: fixedNow(ts0)}
	if err := v.Verify(msgID, strconv.Itoa(ts0), sig0, []byte(body0)); !errors.Is(err, webhook.ErrInvalidSecret) {
		t.Fatalf("Verify error = %v, want ErrInvalidSecret", err)
	}
	if got := webhook.Sign([]webhook.Secret{{}}, msgID, time.Unix(ts0, 0), []byte(body0)); got != "" {
		t.Fatalf("Sign with zero secret = %q, want empty", got)
	}
}

func TestVerifyTolerance(t *testing.T) {
	sec := []webhook.Secret{mustSecret(t, secretA)}
	body := []byte(body0)
	tests := []struct {
		name      string
		tolerance time.Duration
		offset    int64 // message timestamp minus now, in seconds
		want      error
	}{
		{"exactly default tolerance old", 0, -300, nil},
		{"exactly default tolerance new", 0, 300, nil},
		{"one second past default old", 0, -301, webhook.ErrTimestampTooOld},
		{"one second past default new", 0, 301, webhook.ErrTimestampTooNew},
		{"negative tolerance means default", -time.Second, -300, nil},
		{"custom tolerance inside", 10 * time.Second, -10, nil},
		{"custom tolerance outside old", 10 * time.Second, -11, webhook.ErrTimestampTooOld},
		{"custom tolerance outside new", 10 * time.Second, 11, webhook.ErrTimestampTooNew},
		{"sub-second tolerance allows only same second", 500 * time.Millisecond, 1, webhook.ErrTimestampTooNew},
		{"sub-second tolerance same second", 500 * time.Millisecond, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := time.Unix(ts0+tt.offset, 0)
			v := webhook.Verifier{Secrets: sec, Tolerance: tt.tolerance, Now: fixedNow(ts0)}
			err := v.Verify(msgID, strconv.FormatInt(ts.Unix(), 10), webhook.Sign(sec, msgID, ts, body), body)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	a, b, c := mustSecret(t, secretA), mustSecret(t, secretB), mustSecret(t, secretC)
	ts := time.Unix(ts0, 0)
	body := []byte(body0)
	both := webhook.Sign([]webhook.Secret{a, b}, msgID, ts, body)
	onlyA := webhook.Sign([]webhook.Secret{a}, msgID, ts, body)
	onlyC := webhook.Sign([]webhook.Secret{c}, msgID, ts, body)

	tests := []struct {
		name    string
		secrets []webhook.Secret
		sig     string
	}{
		{"two signatures, verifier knows the old secret", []webhook.Secret{a}, both},
		{"two signatures, verifier knows the new secret", []webhook.Secret{b}, both},
		{"one signature, verifier knows both secrets", []webhook.Secret{c, a}, onlyA},
		{"valid signature among invalid ones", []webhook.Secret{a}, "v1,bogus " + onlyC + " v1a,zzz " + onlyA + " v2," + onlyA[3:]},
		{"extra whitespace between signatures", []webhook.Secret{b}, "  " + onlyC + "   \t " + strings.ReplaceAll(both, " ", "  \t  ") + "  "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := webhook.Verifier{Secrets: tt.secrets, Now: fixedNow(ts0)}
			if err := v.Verify(msgID, strconv.Itoa(ts0), tt.sig, body); err != nil {
				t.Fatalf("Verify(%q): %v", tt.sig, err)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	tests := []struct {
		name  string
		input string
		ok    bool
	}{
		{"official vector secret", secretA, true},
		{"32-byte padded key", secretB, true},
		{"16-byte key", "whsec_" + "AAAAAAAAAAAAAAAAAAAAAA==", true},
		{"15-byte key", "whsec_" + "AAAAAAAAAAAAAAAAAAAA", false},
		{"missing prefix", secretA[len("whsec_"):], false},
		{"wrong prefix", "whsek_" + secretA[len("whsec_"):], false},
		{"empty", "", false},
		{"prefix only", "whsec_", false},
		{"invalid base64", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!!", false},
		{"url-safe alphabet", "whsec_" + strings.Repeat("-_", 16), false},
		{"missing padding", secretB[:len(secretB)-1], false},
		{"surrounding space", " " + secretA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := webhook.ParseSecret(tt.input)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseSecret: %v", err)
				}
				return
			}
			if !errors.Is(err, webhook.ErrInvalidSecret) {
				t.Fatalf("ParseSecret error = %v, want ErrInvalidSecret", err)
			}
			if body := strings.TrimPrefix(strings.TrimSpace(tt.input), "whsec_"); len(body) > 4 && strings.Contains(err.Error(), body) {
				t.Fatalf("error %q leaks the secret text", err)
			}
		})
	}
}

func TestParseSecrets(t *testing.T) {
	got, err := webhook.ParseSecrets(" " + secretA + " ,\t" + secretB + "  ")
	if err != nil {
		t.Fatalf("ParseSecrets: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("ParseSecrets returned %d secrets, want 2", len(got))
	}
	sig := webhook.Sign(got[1:], msgID, time.Unix(ts0, 0), []byte(body0))
	if want := webhook.Sign([]webhook.Secret{mustSecret(t, secretB)}, msgID, time.Unix(ts0, 0), []byte(body0)); sig != want {
		t.Fatalf("second parsed secret signs %q, want %q", sig, want)
	}

	for _, bad := range []string{"", "  ", ",", secretA + ",", secretA + ",,", secretA + ",whsec_short"} {
		_, err := webhook.ParseSecrets(bad)
		if !errors.Is(err, webhook.ErrInvalidSecret) {
			t.Errorf("ParseSecrets(%q) error = %v, want ErrInvalidSecret", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), secretA[6:]) {
			t.Errorf("ParseSecrets(%q) error %q leaks a secret", bad, err)
		}
	}
}

func TestGenerateSecret(t *testing.T) {
	s1, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if s1 == s2 {
		t.Fatal("GenerateSecret returned the same secret twice")
	}
	if !strings.HasPrefix(s1, "whsec_") || len(s1) != len("whsec_")+44 {
		t.Fatalf("GenerateSecret = %d chars with prefix %q, want whsec_ + 44", len(s1), s1[:min(6, len(s1))])
	}
	if _, err := webhook.ParseSecret(s1); err != nil {
		t.Fatalf("ParseSecret(GenerateSecret()): %v", err)
	}
}

func TestSecretRedacted(t *testing.T) {
	s := mustSecret(t, secretA)
	key := secretA[len("whsec_"):]
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, s)
		if strings.Contains(out, key) || strings.Contains(out, "[") {
			t.Errorf("Sprintf(%q) = %q leaks key material", format, out)
		}
	}
	if got := s.String(); got != "whsec_***" {
		t.Errorf("String() = %q, want whsec_***", got)
	}
	if out := fmt.Sprintf("%v", []webhook.Secret{s}); strings.Contains(out, key) {
		t.Errorf("slice formatting %q leaks key material", out)
	}
}

func TestSetHeaders(t *testing.T) {
	sec := []webhook.Secret{mustSecret(t, secretA)}
	h := http.Header{}
	webhook.SetHeaders(h, sec, msgID, time.Unix(ts0, 999_000_000), []byte(body0))
	if got := h.Get(webhook.HeaderID); got != msgID {
		t.Errorf("%s = %q, want %q", webhook.HeaderID, got, msgID)
	}
	if got := h.Get(webhook.HeaderTimestamp); got != strconv.Itoa(ts0) {
		t.Errorf("%s = %q, want %d", webhook.HeaderTimestamp, got, ts0)
	}
	if got := h.Get(webhook.HeaderSignature); got != sig0 {
		t.Errorf("%s = %q, want %q", webhook.HeaderSignature, got, sig0)
	}
}

func TestVerifyAllocations(t *testing.T) {
	sec := []webhook.Secret{mustSecret(t, secretA)}
	v := webhook.Verifier{Secrets: sec, Now: fixedNow(ts0)}
	body := []byte(body0)
	ts := strconv.Itoa(ts0)
	allocs := testing.AllocsPerRun(100, func() {
		if err := v.Verify(msgID, ts, sig0, body); err != nil {
			t.Fatal(err)
		}
	})
	// Today hmac.New accounts for five allocations and the shared scratch
	// buffer for one. The limit leaves a little room for standard library
	// changes while still catching parsing or comparison starting to allocate.
	if allocs > 8 {
		t.Fatalf("Verify allocates %v times per call, want at most 8", allocs)
	}
	t.Logf("Verify allocations per call: %v", allocs)
}

func BenchmarkVerify(b *testing.B) {
	sec := mustSecret(b, secretA)
	body := []byte(strings.Repeat(`{"k":"v"},`, 100))
	ts := time.Unix(ts0, 0)
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) {
			// With two secrets the matching one is last, the worst case.
			secrets := []webhook.Secret{sec}
			if n == 2 {
				secrets = []webhook.Secret{mustSecret(b, secretB), sec}
			}
			v := webhook.Verifier{Secrets: secrets, Now: fixedNow(ts0)}
			sig := webhook.Sign([]webhook.Secret{sec}, msgID, ts, body)
			tsHeader := strconv.Itoa(ts0)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := v.Verify(msgID, tsHeader, sig, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
