package testutil

import (
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// DialFunc opens a Conn: connector.Dial, or a cntest.Kernel's Dial or
// DialUnprivileged.
type DialFunc = func(*connector.Config) (*connector.Conn, error)

// Dial opens a Conn with dial and cfg, failing the test if it cannot, and
// closes it when the test ends. A caller may close it earlier (a second
// Close only returns an error, which the cleanup ignores).
func Dial(t testing.TB, dial DialFunc, cfg *connector.Config) *connector.Conn {
	t.Helper()
	c, err := dial(cfg)
	if err != nil {
		t.Fatalf("Dial(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Pair opens a receiving Conn with rxCfg and a sending Conn with the
// defaults, both with dial, both closed when the test ends (see Dial). A
// helper that a test calls many times closes them itself, so that its
// sockets do not pile up (nor their group memberships).
func Pair(t testing.TB, dial DialFunc, rxCfg *connector.Config) (rx, tx *connector.Conn) {
	t.Helper()
	return Dial(t, dial, rxCfg), Dial(t, dial, nil)
}

// Receive reads one datagram's messages from c, failing the test if none
// comes within wait or the receive fails.
func Receive(t testing.TB, c *connector.Conn, wait time.Duration) ([]connector.Message, connector.Sender) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	msgs, from, err := c.Receive()
	if err != nil {
		t.Fatalf("port %d: Receive: %v", c.PortID(), err)
	}
	return msgs, from
}
