package ssrf_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/ssrf"
)

func prefixes(t *testing.T, cidrs ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, c := range cidrs {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

func TestCheckRanges(t *testing.T) {
	tests := []struct {
		addr    string
		allowed []string
		reason  string // "" = allowed
	}{
		// Public addresses pass.
		{addr: "93.184.215.14"},
		{addr: "8.8.8.8"},
		{addr: "1.1.1.1"},
		{addr: "2606:4700:4700::1111"},
		{addr: "::ffff:8.8.8.8"},
		{addr: "64:ff9b::808:808"},                        // NAT64 of 8.8.8.8
		{addr: "2002:808:808::1"},                         // 6to4 of 8.8.8.8
		{addr: "100.63.255.255"},                          // just below CGNAT
		{addr: "100.128.0.0"},                             // just above CGNAT
		{addr: "172.15.255.255"},                          // just below 172.16/12
		{addr: "172.32.0.0"},                              // just above
		{addr: "223.255.255.255"},                         // just below multicast
		{addr: "11.0.0.0"},                                // just above 10/8
		{addr: "169.253.255.255"},                         // just below link-local
		{addr: "192.169.0.0"},                             // just above 192.168/16
		{addr: "198.20.0.0"},                              // just above benchmarking
		{addr: "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}, // just below fc00::/7
		{addr: "fe00::1"},                                 // between fc00::/7 and fe80::/10

		{addr: "127.0.0.1", reason: "loopback address"},
		{addr: "127.255.255.254", reason: "loopback address"},
		{addr: "::1", reason: "loopback address"},
		{addr: "::ffff:127.0.0.1", reason: "loopback address (IPv4-mapped)"},
		{addr: "10.0.0.1", reason: "private address (RFC 1918)"},
		{addr: "10.255.255.255", reason: "private address (RFC 1918)"},
		{addr: "172.16.0.1", reason: "private address (RFC 1918)"},
		{addr: "172.31.255.255", reason: "private address (RFC 1918)"},
		{addr: "192.168.1.1", reason: "private address (RFC 1918)"},
		{addr: "::ffff:192.168.1.1", reason: "private address (RFC 1918) (IPv4-mapped)"},
		{addr: "::ffff:10.1.2.3", reason: "private address (RFC 1918) (IPv4-mapped)"},
		{addr: "fc00::1", reason: "private address (unique local"},
		{addr: "fd12:3456:789a::1", reason: "private address (unique local"},
		{addr: "169.254.169.254", reason: "link-local address (cloud metadata"},
		{addr: "169.254.0.1", reason: "link-local address"},
		{addr: "::ffff:169.254.169.254", reason: "link-local address (cloud metadata lives at 169.254.169.254) (IPv4-mapped)"},
		{addr: "fe80::1", reason: "link-local address"},
		{addr: "fe80::1%eth0", reason: "link-local address"},
		{addr: "febf::1", reason: "link-local address"},
		{addr: "100.64.0.1", reason: "shared address space (CGNAT"},
		{addr: "100.127.255.255", reason: "shared address space (CGNAT"},
		{addr: "224.0.0.1", reason: "multicast address"},
		{addr: "239.255.255.250", reason: "multicast address"},
		{addr: "ff02::1", reason: "multicast address"},
		{addr: "0.0.0.0", reason: "unspecified address"},
		{addr: "::", reason: "unspecified address"},
		{addr: "::ffff:0.0.0.0", reason: "unspecified address (IPv4-mapped)"},
		{addr: "0.1.2.3", reason: `"this network" address`},
		{addr: "255.255.255.255", reason: "broadcast address"},
		{addr: "240.0.0.1", reason: "reserved address (240.0.0.0/4)"},
		{addr: "192.0.2.1", reason: "reserved address (documentation)"},
		{addr: "198.51.100.7", reason: "reserved address (documentation)"},
		{addr: "203.0.113.9", reason: "reserved address (documentation)"},
		{addr: "198.18.0.1", reason: "reserved address (benchmarking)"},
		{addr: "192.0.0.8", reason: "reserved address (IETF protocol assignments)"},
		{addr: "192.88.99.1", reason: "reserved address (6to4 relay anycast)"},
		{addr: "2001:db8::1", reason: "reserved address (documentation)"},
		{addr: "2001::1", reason: "reserved address (IETF protocol assignments, Teredo)"},
		{addr: "::127.0.0.1", reason: "reserved address (IPv4-compatible IPv6)"},
		{addr: "64:ff9b::7f00:1", reason: "loopback address (NAT64)"},
		{addr: "64:ff9b::a9fe:a9fe", reason: "link-local address (cloud metadata lives at 169.254.169.254) (NAT64)"},
		{addr: "2002:7f00:1::1", reason: "loopback address (6to4)"},
		{addr: "2002:c0a8:101::1", reason: "private address (RFC 1918) (6to4)"},
		{addr: "64:ff9b:1::1", reason: "reserved address (local-use NAT64)"},
		{addr: "fec0::1", reason: "reserved address (site-local)"},

		// ALLOWED_NETWORKS opens exactly what it names.
		{addr: "127.0.0.1", allowed: []string{"127.0.0.0/8"}},
		{addr: "::ffff:127.0.0.1", allowed: []string{"127.0.0.0/8"}},
		{addr: "::1", allowed: []string{"127.0.0.0/8"}, reason: "loopback address"},
		{addr: "::1", allowed: []string{"::1/128"}},
		{addr: "10.1.2.3", allowed: []string{"10.1.0.0/16"}},
		{addr: "10.2.0.1", allowed: []string{"10.1.0.0/16"}, reason: "private address (RFC 1918)"},
		{addr: "169.254.169.254", allowed: []string{"10.0.0.0/8", "192.168.0.0/16"}, reason: "link-local address"},
		{addr: "fd00::5", allowed: []string{"fd00::/8"}},
	}
	for _, tt := range tests {
		name := tt.addr
		if len(tt.allowed) > 0 {
			name += " allowed " + strings.Join(tt.allowed, ",")
		}
		t.Run(name, func(t *testing.T) {
			g := ssrf.New(prefixes(t, tt.allowed...))
			err := g.Check(netip.MustParseAddr(tt.addr))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", tt.addr, err)
				}
				return
			}
			var re *ssrf.RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Check(%s) = %v, want a *RefusedError", tt.addr, err)
			}
			if !strings.HasPrefix(re.Reason, tt.reason) {
				t.Errorf("reason %q, want it to start with %q", re.Reason, tt.reason)
			}
			if want := "refused address " + netip.MustParseAddr(tt.addr).String() + ": "; !strings.HasPrefix(err.Error(), want) ||
				!strings.HasSuffix(err.Error(), ", not in ALLOWED_NETWORKS") {
				t.Errorf("message %q, want %q… not in ALLOWED_NETWORKS", err, want)
			}
		})
	}
}

func TestControl(t *testing.T) {
	g := ssrf.New(nil)
	tests := []struct {
		network, address, want string
	}{
		{"tcp4", "127.0.0.1:8081", "dial 127.0.0.1:8081 refused: loopback address, not in ALLOWED_NETWORKS"},
		{"tcp6", "[::1]:443", "dial [::1]:443 refused: loopback address, not in ALLOWED_NETWORKS"},
		{"tcp6", "[::ffff:169.254.169.254]:80", "dial [::ffff:169.254.169.254]:80 refused: link-local address (cloud metadata lives at 169.254.169.254) (IPv4-mapped), not in ALLOWED_NETWORKS"},
		{"tcp6", "[fe80::1%eth0]:80", "dial [fe80::1%eth0]:80 refused: link-local address, not in ALLOWED_NETWORKS"},
		{"udp", "8.8.8.8:53", `dial 8.8.8.8:53 refused: network "udp" is not TCP`},
		{"tcp", "example.com:80", "dial example.com:80 refused: not an IP address and port"},
		{"tcp4", "8.8.8.8:443", ""},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.address, func(t *testing.T) {
			err := g.Control(tt.network, tt.address, nil)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Control = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	g := ssrf.New(nil)
	tests := []struct {
		url  string
		want string // substring of the error; "" = accepted
	}{
		{"https://example.com/webhooks", ""},
		{"http://example.com:8080/in?x=1", ""},
		{"https://hooks.example.com./in", ""},
		{"https://[2606:4700:4700::1111]/in", ""},
		{"https://93.184.215.14/in", ""},
		{"https://my_host.example.com/in", ""},
		{"https://localhost/in", ""}, // a name: checked when dialled
		{"https://1.2.3.4.nip.io/in", ""},

		{"", "is required"},
		{"ftp://example.com/x", "must use http or https"},
		{"javascript:alert(1)", "must use http or https"},
		{"file:///etc/passwd", "must use http or https"},
		{"/relative/path", "must use http or https"},
		{"https:opaque", "with a host"},
		{"https:///nohost", "with a host"},
		{"https://user:pass@example.com/", "user name or password"},
		{"https://user@example.com/", "user name or password"},
		{"https://example.com/#frag", "fragment"},
		{"https://example.com/#", "fragment"},
		{"https://example.com:0/", "invalid port"},
		{"https://example.com:99999/", "invalid port"},
		{"https://example.com:/", "invalid port"},
		{"https://exa mple.com/", "printable ASCII"},
		{"https://exämple.com/", "printable ASCII"},
		{"https://example.com/\x00", "printable ASCII"},
		{"https://" + strings.Repeat("a", 2048) + ".com/", "at most 2048 bytes"},
		{"https://-bad-.example.com/", "valid host name"},
		{"https://a..b/", "valid host name"},
		{"https://%65xample.com/", "must be an absolute URL"},
		{"http://127.0.0.1:8081/x", "refused address 127.0.0.1: loopback address, not in ALLOWED_NETWORKS"},
		{"http://[::1]/x", "refused address ::1: loopback address"},
		{"http://[::ffff:127.0.0.1]/x", "refused address ::ffff:127.0.0.1: loopback address (IPv4-mapped)"},
		{"http://169.254.169.254/latest/meta-data/", "refused address 169.254.169.254: link-local address"},
		{"http://10.0.0.5/", "refused address 10.0.0.5: private address"},
		{"http://0.0.0.0/", "refused address 0.0.0.0: unspecified address"},
		{"http://[fe80::1%25eth0]/", "IPv6 zone"},
		{"http://[::1/", "must be an absolute URL"},
		{"http://2130706433/", "standard form or a DNS name"}, // 127.0.0.1 as inet_aton reads it
		{"http://0x7f.1/", "standard form or a DNS name"},
		{"http://0177.0.0.1/", "standard form or a DNS name"},
		{"http://127.1/", "standard form or a DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := g.CheckURL(tt.url)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("CheckURL = %v, want accepted", err)
			case tt.want != "" && err == nil:
				t.Fatalf("CheckURL accepted, want an error with %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("CheckURL = %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if err := ssrf.New(prefixes(t, "127.0.0.0/8")).CheckURL("http://127.0.0.1:8081/x"); err != nil {
		t.Errorf("with 127.0.0.0/8 allowed: %v", err)
	}
}

// receiver is an HTTP server on 127.0.0.1 that counts its requests.
func receiver(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// offline is a resolver that reads /etc/hosts and fails every DNS query on
// the spot, so that no test can send a packet beyond this machine.
var offline = &net.Resolver{
	PreferGo: true,
	Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("DNS is off in tests")
	},
}

func guard(t *testing.T, cidrs ...string) *ssrf.Guard {
	g := ssrf.New(prefixes(t, cidrs...))
	ssrf.SetResolver(g, offline)
	return g
}

func TestClientRefusesLoopbackUnlessAllowed(t *testing.T) {
	srv, hits := receiver(t)
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	_, err := guard(t).Client(5*time.Second, 1).Get(srv.URL)
	re, ok := ssrf.Refused(err)
	if !ok {
		t.Fatalf("GET %s without ALLOWED_NETWORKS = %v, want a refusal", srv.URL, err)
	}
	if want := fmt.Sprintf("dial 127.0.0.1:%d refused: loopback address, not in ALLOWED_NETWORKS", port); re.Error() != want {
		t.Errorf("refusal %q, want %q", re, want)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the receiver got %d requests through a refused dial", n)
	}

	resp, err := guard(t, "127.0.0.0/8").Client(5*time.Second, 1).Get(srv.URL)
	if err != nil {
		t.Fatalf("GET with 127.0.0.0/8 allowed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || hits.Load() != 1 {
		t.Fatalf("status %d, %d hits; want 200 and 1", resp.StatusCode, hits.Load())
	}
}

// TestClientChecksResolvedName: a name passes CheckURL, but the address it
// resolves to is checked when dialled, so a name pointing at a refused
// address (here localhost, as DNS rebinding would arrange) gets nowhere.
func TestClientChecksResolvedName(t *testing.T) {
	srv, hits := receiver(t)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("http://localhost:%d/webhook", port)

	g := guard(t)
	if err := g.CheckURL(url); err != nil {
		t.Fatalf("CheckURL(%s) = %v; a name is checked at dial time", url, err)
	}
	_, err := g.Client(5*time.Second, 1).Get(url)
	re, ok := ssrf.Refused(err)
	if !ok {
		t.Fatalf("GET %s = %v, want a refusal", url, err)
	}
	if !strings.HasPrefix(re.Error(), "dial ") || !strings.HasSuffix(re.Error(), fmt.Sprintf(":%d refused: loopback address, not in ALLOWED_NETWORKS", port)) {
		t.Errorf("refusal %q, want dial <loopback>:%d refused: loopback address, not in ALLOWED_NETWORKS", re, port)
	}
	if hits.Load() != 0 {
		t.Fatal("the receiver got a request through a refused name")
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	target, targetHits := receiver(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)

	resp, err := guard(t, "127.0.0.0/8").Client(5*time.Second, 1).Post(redirect.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || targetHits.Load() != 0 {
		t.Fatalf("status %d, target hits %d; want the 307 itself and no request to its Location", resp.StatusCode, targetHits.Load())
	}
}

// TestClientIgnoresProxyEnvironment: with a proxy, the address dialled
// would be the proxy's, which then reaches whatever the URL names. The
// proxy here is on 127.0.0.1 and allowed, so a client that used it would
// deliver there; the guarded client instead resolves the name itself,
// which the offline resolver refuses.
func TestClientIgnoresProxyEnvironment(t *testing.T) {
	proxy, proxyHits := receiver(t)
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	_, err := guard(t, "127.0.0.0/8").Client(5*time.Second, 1).Get("http://example.com/webhook")
	if err == nil || !strings.Contains(err.Error(), "DNS is off") {
		t.Fatalf("GET = %v, want the name resolved directly (and refused by the offline resolver)", err)
	}
	if n := proxyHits.Load(); n != 0 {
		t.Fatalf("the proxy got %d requests", n)
	}
}
