package webhook_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/webhook"
)

// FuzzVerify checks that Verify never panics and never accepts a message
// unless the signature header carries exactly what Sign would produce.
func FuzzVerify(f *testing.F) {
	a, b := mustSecret(f, secretA), mustSecret(f, secretB)
	secrets := []webhook.Secret{a, b}
	ts := strconv.Itoa(ts0)

	f.Add(msgID, ts, sig0, []byte(body0))
	f.Add(msgID, ts, webhook.Sign(secrets, msgID, time.Unix(ts0, 0), []byte(body0)), []byte(body0))
	f.Add("evt_1", strconv.Itoa(ts0-299), webhook.Sign([]webhook.Secret{b}, "evt_1", time.Unix(ts0-299, 0), nil), []byte{})
	f.Add(msgID, ts, "v1a,"+sig0[3:]+"  v1,"+sig0[3:], []byte(body0))
	f.Add(msgID, "01614265330", sig0, []byte(body0))
	f.Add(msgID, "-9223372036854775808", sig0, []byte(body0))
	f.Add("", "", "", []byte(nil))
	f.Add("msg with space", ts, "v1,", []byte("\x00"))
	f.Add(msgID, ts, strings.Repeat("v1,", 2000), []byte(body0))

	v := webhook.Verifier{Secrets: secrets, Now: fixedNow(ts0)}
	f.Fuzz(func(t *testing.T, id, timestamp, signature string, body []byte) {
		if err := v.Verify(id, timestamp, signature, body); err != nil {
			return
		}
		n, err := strconv.ParseInt(timestamp, 10, 64)
		if err != nil {
			t.Fatalf("accepted non-integer timestamp %q", timestamp)
		}
		want := strings.Fields(webhook.Sign(secrets, id, time.Unix(n, 0), body))
		for _, entry := range strings.Fields(signature) {
			for _, w := range want {
				if entry == w {
					return
				}
			}
		}
		t.Fatalf("accepted id=%q ts=%q sig=%q body=%q without a matching v1 entry %q", id, timestamp, signature, body, want)
	})
}
