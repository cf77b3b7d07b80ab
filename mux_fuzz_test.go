package connector_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// kernelSeeds returns the datagrams captured from a real kernel for
// FuzzReader (testdata/fuzz/FuzzReader/kernel-*, see its README).
func kernelSeeds(f *testing.F) [][]byte {
	files, err := filepath.Glob("testdata/fuzz/FuzzReader/kernel-*")
	if err != nil || len(files) == 0 {
		f.Fatalf("no kernel seeds: %v", err)
	}
	var out [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			if s, ok := strings.CutPrefix(strings.TrimSpace(line), "[]byte("); ok {
				q, err := strconv.Unquote(strings.TrimSuffix(s, ")"))
				if err != nil {
					f.Fatalf("%s: %v", name, err)
				}
				out = append(out, []byte(q))
			}
		}
	}
	return out
}

var fuzzMatchers = []struct {
	name  string
	match connector.Match
}{{"MatchGenealogy", connector.MatchGenealogy}, {"MatchSeqAck", connector.MatchSeqAck}, {"MatchAckPlusOne", connector.MatchAckPlusOne}, {"MatchSeq", connector.MatchSeq}}

// FuzzCallMatch feeds an arbitrary datagram, from an arbitrary port, to a
// Conn on which an Exchange waits for replies to a request with the given
// id, seq and ack, under one of the package's matchers. The datagram
// arrives before a terminating reply that always matches. The Exchange must
// get exactly the messages of the datagram that the reference decoder finds
// and the matcher accepts, from the kernel only, in order, then the
// terminator; nothing may panic or hang.
func FuzzCallMatch(f *testing.F) {
	for _, d := range kernelSeeds(f) {
		// The proc ack in the seeds answers ack 0x355054d4.
		f.Add(d, uint32(0), uint32(1), uint32(0), uint32(0x355054d4), uint8(1))
		f.Add(d, uint32(0), uint32(1), uint32(0x3c6d), uint32(0x3c6c), uint8(0))
		f.Add(d, uint32(77), uint32(1), uint32(0x3c6d), uint32(0), uint8(2))
	}
	f.Add([]byte{}, uint32(0), uint32(3), uint32(1), uint32(1), uint8(2))
	f.Add(cntest.MustDatagram(connector.Message{ID: connector.IDW1, Seq: 5, Ack: 6}), uint32(0), uint32(3), uint32(5), uint32(9), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, port, idx, seq, ack uint32, which uint8) {
		m := fuzzMatchers[int(which)%len(fuzzMatchers)]
		req := connector.Message{ID: connector.CBID{Idx: idx, Val: 1}, Seq: seq, Ack: ack}
		// The terminator matches every matcher; Flags tell it apart
		// from the fuzzer's messages, which may match too.
		end := connector.Message{ID: req.ID, Seq: req.Seq, Ack: req.Seq + 1, Flags: 0xe1d}
		if m.name == "MatchAckPlusOne" || m.name == "MatchGenealogy" {
			end.Ack = req.Ack + 1
		}
		k := cntest.New(nil)
		c, err := k.Dial(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		k.Handle(req.ID, func(connector.Message, connector.Sender) []cntest.Reply {
			_ = k.InjectRaw(c.PortID(), connector.Sender{Port: port}, data)
			return []cntest.Reply{{Message: end}}
		})

		var want []connector.Message
		if port == 0 && len(data) <= connector.DefaultMessageBufferSize {
			msgs, _ := refDatagram(data)
			for _, r := range msgs {
				if m.match(req, r, connector.Sender{}) {
					want = append(want, r)
				}
			}
		}
		want = append(want, end)
		if i := slices.IndexFunc(want, func(r connector.Message) bool {
			return r.Flags == end.Flags && r.ID == end.ID && r.Seq == end.Seq && r.Ack == end.Ack && len(r.Data) == 0
		}); i >= 0 {
			want = want[:i+1]
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got []connector.Message
		err = connector.Exchange(ctx, c, req, connector.Destination{}, m.match, func(r connector.Message, from connector.Sender) bool {
			if from != (connector.Sender{}) {
				t.Errorf("reply from %v to a request sent to the kernel", from)
			}
			got = append(got, r)
			return !(r.Flags == end.Flags && r.ID == end.ID && r.Seq == end.Seq && r.Ack == end.Ack && len(r.Data) == 0)
		})
		if err != nil {
			t.Fatalf("Exchange with %s: %v", m.name, err)
		}
		if err := sameMessages(got, want); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	})
}

// FuzzParseAgents feeds arbitrary text to the /proc/net/connector parser
// through a fake whose agent list is that text. Whatever it accepts must
// survive a round trip through the kernel's format.
func FuzzParseAgents(f *testing.F) {
	f.Add([]byte("Name            ID\ncn_proc         1:1\n")) // this machine's kernel
	f.Add([]byte("Name            ID\ncn_proc         1:1\nw1              3:1\nuvesafb         4:1\ndm_log_userspace 7:1\n"))
	f.Add([]byte("Name            ID\n"))
	f.Add([]byte("Name ID\na b 4294967295:4294967295\n"))
	f.Add([]byte("Name            ID\ncn_proc 1:\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, text []byte) {
		agents, err := connector.ParseAgentsForTest(text)
		if err != nil {
			if agents != nil {
				t.Fatalf("agents %v with error %v", agents, err)
			}
			return
		}
		var b bytes.Buffer
		b.WriteString("Name            ID\n")
		for _, a := range agents {
			if a.Name == "" || strings.ContainsAny(a.Name, "\n") || strings.TrimSpace(a.Name) != a.Name {
				t.Fatalf("accepted a bad name %q", a.Name)
			}
			fmt.Fprintf(&b, "%-15s %d:%d\n", a.Name, a.ID.Idx, a.ID.Val)
		}
		again, err := connector.ParseAgentsForTest(b.Bytes())
		if err != nil || !slices.Equal(again, agents) {
			t.Fatalf("round trip: %v, %v; want %v", again, err, agents)
		}
	})
}
