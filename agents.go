package connector

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// An Agent is a kernel agent registered with the connector: a callback for
// one id (cn_add_callback in drivers/connector/connector.c).
type Agent struct {
	// Name is the name the driver registered, for example "cn_proc" or
	// "w1".
	Name string
	// ID is the callback id the agent receives messages for.
	ID CBID
}

func (a Agent) String() string { return fmt.Sprintf("%s %d:%d", a.Name, a.ID.Idx, a.ID.Val) }

// ErrNoAgent reports a message to the kernel for a callback id that no
// kernel agent has registered: the kernel would drop it without a word, and
// a reply would never come. The error's text names what registers a known
// id (see [NoAgentError]): w1 3:1 the module wire, dm 7:1 the module
// dm-log-userspace, v86d 4:1 the module uvesafb.
var ErrNoAgent = errors.New("no kernel agent is registered for this callback id")

// agentSources says what registers the kernel agent of a known id: the
// module to load, or the kernel option where there is no module
// (include/uapi/linux/connector.h for the ids; module names of the
// drivers that call cn_add_callback). The one place these names are
// written.
var agentSources = map[CBID]string{
	IDProc: "process events are built into the kernel, not a module: build it with CONFIG_PROC_EVENTS=y",
	IDW1:   "load the w1 core module wire (modprobe wire; the kernel needs CONFIG_W1_CON)",
	IDV86D: "load the uvesafb module (modprobe uvesafb v86d=/path/to/helper)",
	IDDM:   "load the dm-log-userspace module (modprobe dm-log-userspace)",
	IDKVP:  "load the hv_utils module (Hyper-V guests only)",
	IDVSS:  "load the hv_utils module (Hyper-V guests only)",
}

// NoAgentError returns the error for a message to the kernel for id when
// the kernel's agents are registered (the list from [Agents] or
// [Conn.Agents]) and none has id: it matches [ErrNoAgent], lists the
// registered agents and says what registers id, where it is a known one. op
// names the operation, as in [OpError]. Packages for one agent (w1, dmlog,
// v86d) use it so that the advice is written once.
func NoAgentError(op string, id CBID, registered []Agent) error {
	names := make([]string, 0, len(registered))
	for _, a := range registered {
		names = append(names, a.String())
	}
	list := "none"
	if len(names) > 0 {
		list = strings.Join(names, ", ")
	}
	what := "load the module of the agent that registers it, or check the id"
	if s, ok := agentSources[id]; ok {
		what = s
	}
	return &OpError{Op: op, Err: fmt.Errorf("%w: nothing receives id %d:%d in the kernel (registered: %s); %s", ErrNoAgent, id.Idx, id.Val, list, what)}
}

// procConnector lists the registered callbacks: a header line, then one
// "%-15s %u:%u" line per callback (drivers/connector/connector.c,
// cn_proc_show). It exists only in the initial network namespace, and
// anyone may read it.
const procConnector = "/proc/net/connector"

// Agents lists the kernel agents the messages that c sends to the kernel
// reach: for a Conn from Dial those of this machine, read from
// /proc/net/connector (see the package function Agents); for a cntest Conn
// the fake agents registered with cntest.Kernel.Handle. It fails with
// the read error when the list cannot be read (outside the initial network
// namespace the file does not exist: the error matches fs.ErrNotExist), and
// with [ErrClosed] after Close.
func (c *Conn) Agents() ([]Agent, error) {
	if err := c.checkOpen("list agents"); err != nil {
		return nil, err
	}
	b, err := c.t.AgentTable()
	if err != nil {
		return nil, opErr("list agents", c.mapErr(err, "list agents"))
	}
	a, err := parseAgents(b)
	return a, opErr("list agents", err)
}

// checkAgent fails with [ErrNoAgent] when the Conn can list the kernel's
// agents and none has id. When the list cannot be read it says nothing.
func (c *Conn) checkAgent(id CBID) error {
	agents, err := c.Agents()
	if err != nil {
		return nil
	}
	for _, a := range agents {
		if a.ID == id {
			return nil
		}
	}
	return NoAgentError("call", id, agents)
}

// parseAgents decodes the text of /proc/net/connector. The name may hold
// spaces; the id is the last field.
func parseAgents(b []byte) ([]Agent, error) {
	var agents []Agent
	header := true
	n := 0
	for line := range bytes.Lines(b) {
		n++
		s := strings.TrimSpace(string(line))
		if header {
			if f := strings.Fields(s); len(f) != 2 || f[0] != "Name" || f[1] != "ID" {
				return nil, fmt.Errorf("%s: line 1 is %q, not the \"Name ID\" header", procConnector, s)
			}
			header = false
			continue
		}
		if s == "" {
			continue
		}
		i := strings.LastIndexAny(s, " \t")
		if i < 0 {
			return nil, fmt.Errorf("%s: line %d %q has no name and id", procConnector, n, s)
		}
		name, idText := strings.TrimSpace(s[:i]), s[i+1:]
		a, b, ok := strings.Cut(idText, ":")
		idx, err1 := strconv.ParseUint(a, 10, 32)
		val, err2 := strconv.ParseUint(b, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: line %d %q: id %q is not IDX:VAL with 32-bit decimal numbers", procConnector, n, s, idText)
		}
		agents = append(agents, Agent{Name: name, ID: CBID{Idx: uint32(idx), Val: uint32(val)}})
	}
	if header {
		return nil, fmt.Errorf("%s is empty: the \"Name ID\" header is missing", procConnector)
	}
	return agents, nil
}
