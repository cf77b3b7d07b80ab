package capcheck

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cnlink/connector"
)

// An Error has the calling package's "pkg: op: detail" text and unwraps to
// the errors it reports.
type Error struct {
	Msg  string
	Errs []error
}

func (e *Error) Error() string   { return e.Msg }
func (e *Error) Unwrap() []error { return e.Errs }

// Wrap gives err the one "pkg: op: " prefix of the calling package's
// errors, and detail after it if not empty, unless it has them already. The "pkg: " of a sentinel of the
// package and the "connector: op: " of a connector.OpError are dropped
// from the text only: errors.Is and errors.As still find err.
func Wrap(pkg, op, detail string, err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	if strings.HasPrefix(s, pkg+": "+op+": ") && detail == "" {
		return err
	}
	var oe *connector.OpError
	if errors.As(err, &oe) && strings.HasPrefix(s, oe.Error()) {
		s = oe.Err.Error() + s[len(oe.Error()):]
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "connector: "), pkg+": ")
	if detail != "" {
		s = detail + ": " + s
	}
	return &Error{Msg: pkg + ": " + op + ": " + s, Errs: []error{err}}
}

// RequireSysAdmin returns nil when the process has CAP_SYS_ADMIN (see
// SysAdmin), and otherwise missing, the calling package's own sentinel,
// with os.ErrPermission: the error matches both with errors.Is, and reads
// "pkg: op: " and missing's text without its own "pkg: ". A failure to read
// the capabilities has the same prefix.
func RequireSysAdmin(pkg, op string, missing error) error {
	ok, err := SysAdmin()
	if err != nil {
		return Wrap(pkg, op, "", err)
	}
	if !ok {
		return Wrap(pkg, op, "", fmt.Errorf("%w (%w)", missing, os.ErrPermission))
	}
	return nil
}

// RequireAgent returns nil when c lists the kernel's agents and one has id,
// or when the list cannot be read (outside the initial network namespace:
// nothing is known then). Otherwise it returns connector.NoAgentError,
// which matches connector.ErrNoAgent and names the module to load, with the
// "pkg: op: " prefix.
func RequireAgent(c *connector.Conn, pkg, op string, id connector.CBID) error {
	agents, err := c.Agents()
	if err != nil || slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == id }) {
		return nil
	}
	return Wrap(pkg, op, "", connector.NoAgentError(op, id, agents))
}
