//go:build unix

package testkit

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// claimEnv makes the test binary, run again as a child, try to claim one
// port and exit 0 if it could, 3 if another process holds it.
const claimEnv = "TESTKIT_CLAIM_PORT"

// TestNoOtherProcessGetsAPortHandedOut: `go test ./...` runs the test
// binaries of several packages at once, each handing out ports of the same
// range; one handed out by this process must not be handed out by another
// before this one's server binds it.
func TestNoOtherProcessGetsAPortHandedOut(t *testing.T) {
	if v := os.Getenv(claimEnv); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil {
			os.Exit(2)
		}
		if claimPort(port) {
			os.Exit(0)
		}
		os.Exit(3)
	}
	claimIn := func(port int) int {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestNoOtherProcessGetsAPortHandedOut$")
		cmd.Env = append(os.Environ(), claimEnv+"="+strconv.Itoa(port))
		var exit *exec.ExitError
		switch err := cmd.Run(); {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			return exit.ExitCode()
		default:
			t.Fatal(err)
		}
		return -1
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if code := claimIn(port); code != 3 {
		t.Fatalf("another process claimed port %d, which this one handed out (exit %d, want 3)", port, code)
	}
	// A port nobody handed out, below FreePort's range.
	if code := claimIn(19_999); code != 0 {
		t.Fatalf("another process could not claim a port nobody holds (exit %d, want 0)", code)
	}
}
