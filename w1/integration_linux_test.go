//go:build linux

package w1_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/internal/w1stub"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
	"golang.org/x/sys/unix"
)

// The integration tests run against the kernel's w1 agent with a DS2482
// bus master emulated on i2c-stub, as the kernel matrix sets it up: the
// modules wire, i2c-stub (chip_addr=0x18), i2c-dev and ds2482 loaded by the
// guest's init. The tests preload the stub's registers, instantiate the
// ds2482 (w1_bus_masterN appears) and remove it at the end. Where the w1
// agent or the stub is missing (the host has no modules) they skip and say
// so; the matrix fails them if they skip there.

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.HelperFunc{
		"unpriv": func([]string) int { return helperUnprivileged() },
	})
}

// requireW1 skips the test unless the kernel's w1 agent is registered (and
// fails it in the matrix, where it must be).
func requireW1(t *testing.T) {
	t.Helper()
	why := ""
	agents, err := connector.Agents()
	switch {
	case err != nil:
		why = fmt.Sprintf("w1 agent not registered (cannot list the connector's agents: %v)", err)
	case !slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == w1.ID }):
		why = "w1 agent not registered"
	case os.Geteuid() != 0:
		t.Skip("privilege missing: instantiating the ds2482 bus master through sysfs needs root")
	default:
		return
	}
	if testutil.InMatrix() {
		t.Fatalf("%s in the kernel matrix: are the modules of testdata/kmatrix-modules loaded?", why)
	}
	t.Skip(why + ": runs only in the kernel matrix (.ci/matrix -pkgs ./w1), which loads wire, i2c-stub, i2c-dev and ds2482")
}

// A stubBus is the DS2482 on i2c-stub.
type stubBus struct{ *w1stub.Bus }

var (
	busOnce sync.Once
	theBus  *w1stub.Bus
	busErr  error
)

// bus returns the ds2482 bus master, instantiating it on first use while
// listening on group 3 for its MASTER_ADD.
func bus(t *testing.T) stubBus {
	t.Helper()
	requireW1(t)
	busOnce.Do(func() { theBus, busErr = w1stub.Setup() })
	if errors.Is(busErr, w1stub.ErrNoStub) && !testutil.InMatrix() {
		t.Skip(busErr.Error() + ": runs only in the kernel matrix (.ci/matrix -pkgs ./w1)")
	}
	if busErr != nil {
		t.Fatal(busErr)
	}
	return stubBus{theBus}
}

// presence sets the presence pulse for the rest of the test.
func (b stubBus) presence(t *testing.T, on bool) {
	t.Helper()
	if err := b.SetPresence(on); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.SetPresence(true) })
}

func dialW1(t *testing.T, cfg *w1.Config) *w1.Conn {
	t.Helper()
	w, err := w1.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	// The kernel sends no reply record that fits none of a request's
	// commands, and no 0:0 message but the empty stray.
	t.Cleanup(func() {
		s := w.Stats()
		if s.Ignored != 0 || s.ZeroID != 0 {
			t.Errorf("w1 Stats %+v: the kernel sent %d records that fit no command and %d non-stray 0:0 messages", s, s.Ignored, s.ZeroID)
		}
		t.Logf("w1 Stats %+v, socket %+v", s, w.Conn().Stats())
	})
	return w
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestIntegrationMasters: the kernel lists the one master, whose MASTER_ADD
// arrived on group 3 with the master's first sequence number.
func TestIntegrationMasters(t *testing.T) {
	b := bus(t)
	if b.Added.Seq != 1 {
		t.Errorf("MASTER_ADD seq %d, want 1 (per-master counter)", b.Added.Seq)
	}
	t.Logf("seed master add 0: %x", b.Raw)
	// The raw reply: one record, ack = seq+1, holding the u32 ids.
	req := connector.Message{ID: w1.ID, Seq: 31, Ack: 7, Data: encode(t, w1.Msg{Type: w1.MsgListMasters})}
	recs := rawExchange(t, req, func(r []rawRecord) bool { return len(r) >= 1 })
	logSeed(t, "list masters", recs)
	if msgs, err := w1.ParseMsgs(recs[0].m.Data); err != nil || recs[0].m.Ack != 32 || len(msgs) != 1 || msgs[0].Type != w1.MsgListMasters {
		t.Errorf("LIST_MASTERS reply %+v: %+v, %v", recs[0].m, msgs, err)
	} else if ids, _ := msgs[0].Masters(); !slices.Equal(ids, []w1.MasterID{b.Master}) {
		t.Errorf("LIST_MASTERS ids %v", ids)
	}
	for _, cfg := range []*w1.Config{nil, {NoBundle: true}} {
		ms, err := dialW1(t, cfg).Masters(ctx10(t))
		if err != nil || !slices.Equal(ms, []w1.MasterID{b.Master}) {
			t.Errorf("Masters = %v, %v; want [%v]", ms, err, b.Master)
		}
	}
}

// TestIntegrationReset: a RESET reports presence as the stub's register
// says, bundled and not; unbundled, each lone RESET comes after the stray
// 0:0 record, which the Conn skips and counts.
func TestIntegrationReset(t *testing.T) {
	b := bus(t)
	for _, bundle := range []bool{true, false} {
		w := dialW1(t, &w1.Config{NoBundle: !bundle})
		for _, on := range []bool{true, false} {
			b.presence(t, on)
			got, err := w.Reset(ctx10(t), b.Master)
			if err != nil || got != on {
				t.Errorf("bundle %v, presence %v: Reset = %v, %v", bundle, on, got, err)
			}
		}
		if want := map[bool]uint64{true: 0, false: 2}[bundle]; w.Stats().Strays != want {
			t.Errorf("bundle %v: %d stray records, want %d", bundle, w.Stats().Strays, want)
		}
	}
	b.presence(t, true)
}

// rawRecord is one cn_msg the kernel sent, with its datagram's index.
type rawRecord struct {
	m        connector.Message
	from     connector.Sender
	datagram int
	dgLen    int
}

// rawExchange sends req on a socket of its own and collects what the kernel
// sends back until done says the reply is complete.
func rawExchange(t *testing.T, req connector.Message, done func([]rawRecord) bool) []rawRecord {
	t.Helper()
	c, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(req); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var recs []rawRecord
	for n := 0; !done(recs); n++ {
		msgs, from, err := c.Receive()
		if err != nil {
			t.Fatalf("after %d records: %v", len(recs), err)
		}
		size := 0
		for _, m := range msgs {
			size += m.Len()
		}
		for _, m := range msgs {
			recs = append(recs, rawRecord{m: m, from: from, datagram: n, dgLen: 16 + size})
		}
	}
	return recs
}

// statuses counts the status records (ack = the request's ack) of recs.
func statuses(req connector.Message, recs []rawRecord) int {
	n := 0
	for _, r := range recs {
		if r.m.ID == w1.ID && r.m.Ack == req.Ack {
			msgs, _ := w1.ParseMsgs(r.m.Data)
			n += len(msgs)
		}
	}
	return n
}

// encode packs msgs as one request payload.
func encode(t *testing.T, msgs ...w1.Msg) []byte {
	t.Helper()
	return testutil.AppendAll(t, w1.AppendMsg, msgs...)
}

// TestIntegrationStrayRecord: a lone data-less command without bundling is
// answered by a 36-byte datagram holding an empty 0:0 cn_msg, then the
// status; with bundling, by the status alone.
func TestIntegrationStrayRecord(t *testing.T) {
	b := bus(t)
	for _, flags := range []uint16{0, w1.FlagBundle} {
		req := connector.Message{ID: w1.ID, Seq: 11, Ack: 500, Flags: flags, Data: encode(t, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(b.Master), Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}})}
		recs := rawExchange(t, req, func(r []rawRecord) bool { return statuses(req, r) == 1 })
		logSeed(t, "stray", recs)
		stray := len(recs) == 2 && w1.IsStray(recs[0].m, recs[0].from) && recs[0].dgLen == 36
		if (flags == 0) != stray {
			t.Errorf("flags %d: records %+v; want a stray record first only without bundling", flags, recs)
		}
	}
}

// TestIntegrationReplyShape sends the request of agents.md 1.4 and compares
// the kernel's reply, datagram by datagram and byte for byte (READ and TOUCH
// data aside), with what the fake agent of package w1test builds: the fake
// is checked against every kernel of the matrix.
func TestIntegrationReplyShape(t *testing.T) {
	b := bus(t)
	found, err := dialW1(t, nil).Search(ctx10(t), b.Master)
	if err != nil {
		t.Fatal(err)
	}
	m := w1.MasterMsgID(b.Master)
	all := []w1.Cmd{
		{Cmd: w1.CmdReset}, {Cmd: w1.CmdWrite, Data: []byte{1, 2}}, {Cmd: w1.CmdRead, Data: make([]byte, 3)},
		{Cmd: w1.CmdTouch, Data: []byte{0xff, 0xff}}, {Cmd: w1.CmdListSlaves}, {Cmd: w1.CmdSearch},
	}
	// The request of agents.md 1.4, then each command alone (the lone
	// ones show where the unbundled reply starts with a stray record).
	reqs := [][]w1.Cmd{all}
	for _, c := range all {
		reqs = append(reqs, []w1.Cmd{c})
	}
	reqs = append(reqs, []w1.Cmd{{Cmd: w1.CmdRead}}, []w1.Cmd{{Cmd: w1.CmdWrite, Data: []byte{1}}, {Cmd: w1.CmdReset}})
	for _, cmds := range reqs {
		for _, flags := range []uint16{0, w1.FlagBundle} {
			req := connector.Message{ID: w1.ID, Seq: 460, Ack: 9000, Flags: flags, Data: encode(t, w1.Msg{Type: w1.MsgMasterCmd, ID: m, Cmds: cmds})}
			kernel := rawExchange(t, req, func(r []rawRecord) bool { return statuses(req, r) == len(cmds) })
			name := fmt.Sprintf("%v flags %d", cmdNames(cmds), flags)
			if len(cmds) == len(all) {
				logSeed(t, name, kernel)
			}
			fake := fakeReply(t, b.Master, found, req)
			if got, want := describe(kernel), describe(fake); got != want {
				t.Errorf("%s: the kernel's reply differs from the fake's:\nkernel:\n%s\nfake:\n%s", name, got, want)
			}
			stray := w1.IsStray(kernel[0].m, kernel[0].from)
			t.Logf("%s: %d records in %d datagrams, stray record first: %v", name, len(kernel), kernel[len(kernel)-1].datagram+1, stray)
		}
	}
}

func cmdNames(cmds []w1.Cmd) string {
	var s []string
	for _, c := range cmds {
		s = append(s, fmt.Sprintf("%v/%d", c.Cmd, len(c.Data)))
	}
	return strings.Join(s, ",")
}

// fakeReply returns the records w1test's agent sends for req, with a master
// of the given id whose bus holds the given devices.
func fakeReply(t *testing.T, master w1.MasterID, devices []w1.SlaveID, req connector.Message) []rawRecord {
	t.Helper()
	k := cntest.New(nil)
	a := w1test.New(k)
	for a.AddMaster() < master {
	}
	for _, id := range devices {
		a.AttachDevice(master, id)
	}
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(req); err != nil {
		t.Fatal(err)
	}
	var recs []rawRecord
	for n := 0; k.Queued(c.PortID()) > 0; n++ {
		msgs, from, err := c.Receive()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			recs = append(recs, rawRecord{m: m, from: from, datagram: n})
		}
	}
	return recs
}

// describe prints records for comparison, with READ and TOUCH data masked.
func describe(recs []rawRecord) string {
	var s strings.Builder
	for _, r := range recs {
		data := bytes.Clone(r.m.Data)
		if msgs, err := w1.ParseMsgs(data); err == nil {
			for _, m := range msgs {
				for _, c := range m.Cmds {
					if c.Cmd == w1.CmdRead || c.Cmd == w1.CmdTouch {
						clear(c.Data)
					}
				}
			}
		}
		fmt.Fprintf(&s, "datagram %d id %v seq %d ack %d flags %d len %d: %x\n", r.datagram, r.m.ID, r.m.Seq, r.m.Ack, r.m.Flags, len(r.m.Data), data)
	}
	return s.String()
}

// logSeed logs the payloads of records in the format of fuzz corpus files,
// so that captures from the matrix's kernels can seed FuzzParseMsgs.
func logSeed(t *testing.T, what string, recs []rawRecord) {
	for i, r := range recs {
		if r.m.ID == w1.ID {
			t.Logf("seed %s %d: %s", what, i, hex.EncodeToString(r.m.Data))
		}
	}
}

// TestIntegrationTransactions: reset, write, read and touch as one message,
// on the master and on a registered slave, as far as the stub allows (it has
// no 1-Wire device: reads return what its registers hold).
func TestIntegrationTransactions(t *testing.T) {
	b := bus(t)
	for _, cfg := range []*w1.Config{nil, {NoBundle: true}} {
		w := dialW1(t, cfg)
		read := make([]byte, 8)
		touch := []byte{0xff, 0x00, 0xff}
		if err := w.Master(b.Master).Reset().Write([]byte{0xcc, 0x44}).Read(read).Touch(touch).Do(ctx10(t)); err != nil {
			t.Errorf("master transaction: %v", err)
		}
		t.Logf("read % x, touch % x", read, touch)
	}
	w := dialW1(t, nil)
	id := w1.NewSlaveID(0x01, 0x665544332211)
	if err := w.AddSlave(ctx10(t), b.Master, id); err != nil {
		t.Fatal(err)
	}
	defer w.RemoveSlave(context.Background(), b.Master, id)
	buf := make([]byte, 4)
	if err := w.Slave(id).Write([]byte{0x33}).Read(buf).Do(ctx10(t)); err != nil {
		t.Errorf("slave transaction: %v", err)
	}
	// A slave takes only READ, WRITE and TOUCH.
	var e *w1.Error
	if err := w.Slave(id).Write([]byte{1}).Reset().Do(ctx10(t)); !errors.Is(err, syscall.EINVAL) || !errors.As(err, &e) || e.Index != 1 {
		t.Errorf("slave RESET: err = %v, want EINVAL for command 1", err)
	}
	// Without presence the selecting reset fails: ENODEV for the message.
	b.presence(t, false)
	if err := w.Slave(id).Read(buf).Do(ctx10(t)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("slave without presence: err = %v, want ENODEV", err)
	}
}

// TestIntegrationErrors checks every documented error status.
func TestIntegrationErrors(t *testing.T) {
	b := bus(t)
	w := dialW1(t, nil)
	var e *w1.Error
	if _, err := w.Reset(ctx10(t), 999); !errors.Is(err, syscall.ENODEV) || !errors.As(err, &e) || e.Index != -1 {
		t.Errorf("unknown master: err = %v, want ENODEV for the message", err)
	}
	if err := w.Slave(w1.NewSlaveID(0x28, 0xdead)).Read(make([]byte, 1)).Do(ctx10(t)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("unknown slave: err = %v, want ENODEV", err)
	}
	if err := w.RemoveSlave(ctx10(t), b.Master, w1.NewSlaveID(0x28, 0xdead)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("removing an unknown slave: err = %v, want EINVAL", err)
	}
	m := w1.MasterMsgID(b.Master)
	for _, tc := range []struct {
		name   string
		flags  uint16
		msg    w1.Msg
		status syscall.Errno
		cmd    bool
	}{
		{"empty command list", w1.FlagBundle, w1.Msg{Type: w1.MsgMasterCmd, ID: m}, syscall.EPROTO, false},
		{"bad type", w1.FlagBundle, w1.Msg{Type: 9, Data: []byte{1, 2, 3, 4}}, syscall.EPROTO, false},
		{"bad command", w1.FlagBundle, w1.Msg{Type: w1.MsgMasterCmd, ID: m, Cmds: []w1.Cmd{{Cmd: 17}}}, syscall.EINVAL, true},
		{"unknown flag", 2 | w1.FlagBundle, w1.Msg{Type: w1.MsgMasterCmd, ID: m, Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}}, syscall.EINVAL, false},
		// A WRITE whose len (10) runs past its message (4 more bytes).
		{"command past its message", w1.FlagBundle, w1.Msg{Type: w1.MsgMasterCmd, ID: m, Data: []byte{byte(w1.CmdWrite), 0, 10, 0, 1, 2, 3, 4}}, syscall.E2BIG, true},
	} {
		req := connector.Message{ID: w1.ID, Seq: 21, Ack: 77, Flags: tc.flags, Data: encode(t, tc.msg)}
		recs := rawExchange(t, req, func(r []rawRecord) bool { return statuses(req, r) >= 1 })
		logSeed(t, tc.name, recs)
		last := recs[len(recs)-1]
		msgs, err := w1.ParseMsgs(last.m.Data)
		if err != nil || len(msgs) != 1 || syscall.Errno(msgs[0].Status) != tc.status || (len(msgs[0].Cmds) == 1) != tc.cmd || last.m.Flags != req.Flags {
			t.Errorf("%s: got %+v flags %d (%v); want status %d, command header %v, flags mirrored", tc.name, msgs, last.m.Flags, err, tc.status, tc.cmd)
		}
	}
}

// TestIntegrationSlaves: an empty bus has no registered slaves, a search on
// the stub returns what the stub's registers make up (ids the kernel does
// not register), and AddSlave/RemoveSlave register a slave with their
// notifications.
func TestIntegrationSlaves(t *testing.T) {
	b := bus(t)
	w := dialW1(t, nil)
	ctx := ctx10(t)
	if got, err := w.Slaves(ctx, b.Master); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty bus: Slaves = %v, %v", got, err)
	}
	found, err := w.Search(ctx, b.Master)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("search on the stub found %v", found)
	for _, id := range found {
		if id != (w1.SlaveID{}) && id.Valid() {
			t.Errorf("search found a plausible id %v on a bus without devices", id)
		}
	}
	if alarm, err := w.AlarmSearch(ctx, b.Master); err != nil {
		t.Errorf("AlarmSearch: %v, %v", alarm, err)
	}
	if got, err := w.Slaves(ctx, b.Master); err != nil || len(got) != 0 {
		t.Errorf("after the search: Slaves = %v, %v; want none registered", got, err)
	}

	ev, err := connector.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	id := w1.NewSlaveID(0x01, 0x123456789abc)
	if err := w.AddSlave(ctx, b.Master, id); err != nil {
		t.Fatal(err)
	}
	if err := w.AddSlave(ctx, b.Master, id); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("adding it twice: err = %v, want EINVAL", err)
	}
	if got, err := w.Slaves(ctx, b.Master); err != nil || !slices.Equal(got, []w1.SlaveID{id}) {
		t.Errorf("Slaves = %v, %v; want [%v]", got, err, id)
	}
	if err := w.RemoveSlave(ctx, b.Master, id); err != nil {
		t.Fatal(err)
	}
	// The notifications, through Watch on the socket that joined group 3
	// before the slave was added.
	var seqs []uint32
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	kinds := []w1.EventKind{w1.SlaveAdded, w1.SlaveRemoved}
	for e, err := range w1.Watch(wctx, ev) {
		if err != nil || e.Kind != kinds[len(seqs)] || e.Slave != id || e.Master != 0 {
			t.Fatalf("notification %+v, %v; want %v %v", e, err, kinds[len(seqs)], id)
		}
		if seqs = append(seqs, e.Seq); len(seqs) == len(kinds) {
			break
		}
	}
	if len(seqs) != len(kinds) {
		t.Fatalf("Watch ended after %d notifications", len(seqs))
	}
	if seqs[1] != seqs[0]+1 {
		t.Errorf("notification seqs %v are not consecutive (per-master counter)", seqs)
	}
	if got, err := w.Slaves(ctx, b.Master); err != nil || len(got) != 0 {
		t.Errorf("after RemoveSlave: Slaves = %v, %v", got, err)
	}
}

// TestIntegrationNoStall: many requests at once through a Conn with the
// smallest receive buffer the kernel allows. The kernel's thread blocks
// while a reply does not fit; the Conn's reader must keep draining so that
// every request completes.
func TestIntegrationNoStall(t *testing.T) {
	b := bus(t)
	c, err := connector.Dial(&connector.Config{ReadBufferSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := w1.NewConn(c, &w1.Config{NoBundle: true, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Master(b.Master).Read(make([]byte, 64)).Read(make([]byte, 64)).Reset().Do(context.Background()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n, _ := c.ReadBuffer()
	t.Logf("receive buffer %d bytes, %d records claimed", n, w.Stats().Mux.Claimed)
}

// TestIntegrationStallWithoutReader shows the hazard the Conn's reader
// exists for, on every kernel: a socket that sends requests and does not
// read its replies blocks the bus master's kernel thread once its receive
// buffer is full, so another client's request to the same master gets no
// reply; once the socket is read, the other client is served again.
func TestIntegrationStallWithoutReader(t *testing.T) {
	b := bus(t)
	stuck, err := connector.Dial(&connector.Config{ReadBufferSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	const n = 40
	for i := range n {
		req := connector.Message{ID: w1.ID, Seq: uint32(1000 + i), Ack: 5, Data: encode(t, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(b.Master), Cmds: []w1.Cmd{{Cmd: w1.CmdRead, Data: make([]byte, 64)}}})}
		if err := stuck.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	w := dialW1(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := w.Reset(ctx, b.Master); !errors.Is(err, w1.ErrNoReply) {
		t.Errorf("with a socket that does not read: Reset err = %v, want ErrNoReply (the master's thread blocked)", err)
	}
	// Read the stuck socket: its 40 statuses arrive, and the master's
	// thread goes on.
	if err := stuck.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < n; {
		msgs, _, err := stuck.Receive()
		if err != nil {
			t.Fatalf("draining after %d statuses: %v", got, err)
		}
		for _, m := range msgs {
			if m.ID == w1.ID && m.Ack == 5 {
				got++
			}
		}
	}
	if ok, err := w.Reset(ctx10(t), b.Master); err != nil || !ok {
		t.Errorf("after draining: Reset = %v, %v", ok, err)
	}
}

// TestIntegrationUnprivileged: as uid 65534 without capabilities, w1
// requests work on every kernel (the agent checks no privilege), while
// joining group 3 for notifications needs CAP_NET_ADMIN before 6.6.
func TestIntegrationUnprivileged(t *testing.T) {
	b := bus(t)
	major, minor := testutil.KernelVersion(t)
	modern := major > 6 || major == 6 && minor >= 6
	cmd := testutil.HelperCommand(t, "unpriv")
	cmd.Env = append(cmd.Env, fmt.Sprintf("W1_TEST_MASTER=%d", b.Master))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	out, err := cmd.Output()
	timer.Stop()
	if err != nil {
		t.Fatalf("unprivileged helper: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	got := testutil.KeyValues(out)
	t.Logf("kernel %d.%d, uid 65534: %v", major, minor, got)
	want := map[string]string{
		"cap_net_admin": "absent",
		"masters":       fmt.Sprint([]w1.MasterID{b.Master}),
		"reset":         "true",
		"transaction":   "ok",
		"join group 3":  "EPERM",
		"watch":         "os.ErrPermission",
		"poll":          "master added " + b.Master.String(),
	}
	if modern {
		want["join group 3"] = "ok"
		want["watch"] = "ok"
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("kernel %d.%d unprivileged %s: got %q, want %q", major, minor, k, got[k], v)
		}
	}
}

func helperUnprivileged() int {
	if err := testutil.BecomeNobody(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 10
	}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &caps[0]); err == nil && caps[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 {
		fmt.Println("cap_net_admin: absent")
	}
	var master w1.MasterID
	fmt.Sscan(os.Getenv("W1_TEST_MASTER"), &master)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := w1.Dial(nil)
	if err != nil {
		fmt.Println("dial:", err)
		return 0
	}
	defer w.Close()
	ms, err := w.Masters(ctx)
	if err != nil {
		fmt.Println("masters:", err)
	} else {
		fmt.Println("masters:", ms)
	}
	present, err := w.Reset(ctx, master)
	fmt.Printf("reset: %v%s\n", present, errString(err))
	err = w.Master(master).Write([]byte{0xcc}).Read(make([]byte, 2)).Do(ctx)
	if err == nil {
		fmt.Println("transaction: ok")
	} else {
		fmt.Println("transaction:", err)
	}
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	switch {
	case err == nil:
		c.Close()
		fmt.Println("join group 3: ok")
	case errors.Is(err, syscall.EPERM):
		fmt.Println("join group 3: EPERM")
	default:
		fmt.Println("join group 3:", err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch := "ok"
	wcancel() // a cancelled watch yields ctx.Err() at once unless joining failed
	for _, err := range w1.Watch(wctx, nil) {
		if errors.Is(err, os.ErrPermission) {
			watch = "os.ErrPermission"
		} else if err != nil && err != context.Canceled {
			watch = err.Error()
		}
		break
	}
	fmt.Println("watch:", watch)
	// The fallback: the first poll reports the master as added.
	for e, err := range w.Poll(ctx, time.Second) {
		if err != nil {
			fmt.Println("poll:", err)
		} else {
			fmt.Println("poll:", e)
		}
		break
	}
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " " + err.Error()
}

// TestIntegrationZMasterRemove runs last but one (tests run in source
// order): it removes the ds2482 and expects MASTER_REMOVE, routed by the
// Mux of a w1 Conn whose socket joined group 3, after which the master is
// gone from the list.
func TestIntegrationZMasterRemove(t *testing.T) {
	b := bus(t)
	ev, err := connector.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	w, events := eventConn(t, ev)
	defer w.Close()
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for removed := false; !removed; {
		select {
		case e := <-events:
			if e.Kind == w1.MasterRemoved {
				if e.Master != b.Master {
					t.Errorf("MASTER_REMOVE for %v, want %v", e.Master, b.Master)
				}
				removed = true
			}
		case <-timeout:
			t.Fatal("no MASTER_REMOVE within 10 s")
		}
	}
	if ms, err := w.Masters(ctx10(t)); err != nil || len(ms) != 0 {
		t.Errorf("after removal: Masters = %v, %v", ms, err)
	}
}

// TestIntegrationZZNoAgent unloads the bus master driver and the w1 core:
// requests then fail at once with ErrNoAgent instead of waiting for a reply
// that the kernel would never send. It loads the modules again afterwards.
func TestIntegrationZZNoAgent(t *testing.T) {
	bus(t)
	if !testutil.InMatrix() {
		t.Skip("unloads wire.ko: runs only in the kernel matrix (.ci/matrix -pkgs ./w1)")
	}
	for _, m := range []string{"ds2482", "wire"} {
		if err := testutil.UnloadModule(m); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		if err := testutil.LoadModule("ds2482", ""); err != nil {
			t.Error(err)
		}
	}()
	w := dialW1(t, &w1.Config{Timeout: time.Minute})
	start := time.Now()
	_, err := w.Masters(context.Background())
	if !errors.Is(err, connector.ErrNoAgent) {
		t.Fatalf("without wire.ko: err = %v, want ErrNoAgent", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ErrNoAgent took %v", d)
	}
	t.Logf("without wire.ko: %v", err)
	watchNoAgent(t, nil)
}

// TestWatchNoAgentOnHost runs where the kernel has no w1 agent (the host):
// Watch fails at once with ErrNoAgent instead of waiting forever. It is not
// a TestIntegration test, which the kernel matrix may not skip: there the
// agent is registered, and TestIntegrationZZNoAgent checks Watch after
// unloading wire.ko.
func TestWatchNoAgentOnHost(t *testing.T) {
	agents, err := connector.Agents()
	switch {
	case err != nil:
		t.Skipf("cannot list the connector's agents (%v): Watch cannot tell whether the w1 agent is registered", err)
	case slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == w1.ID }):
		t.Skip("the w1 agent is registered: TestIntegrationZZNoAgent checks this after unloading wire.ko")
	}
	watchNoAgent(t, nil)
}
