package capcheck

import (
	"fmt"
	"os"
	"slices"

	"github.com/cnlink/connector"
)

// RequireSysAdmin returns nil when the process has CAP_SYS_ADMIN (see
// SysAdmin), and otherwise missing, the calling package's own sentinel,
// wrapped together with os.ErrPermission: the error matches both with
// errors.Is. A failure to read the capabilities is returned with the
// prefix pkg (the calling package's name), as missing has its own.
func RequireSysAdmin(pkg string, missing error) error {
	ok, err := SysAdmin()
	if err != nil {
		return fmt.Errorf("%s: %w", pkg, err)
	}
	if !ok {
		return fmt.Errorf("%w (%w)", missing, os.ErrPermission)
	}
	return nil
}

// RequireAgent returns nil when c lists the kernel's agents and one has id,
// or when the list cannot be read (outside the initial network namespace:
// nothing is known then). Otherwise it returns connector.NoAgentError for
// op, which matches connector.ErrNoAgent and names the module to load.
func RequireAgent(c *connector.Conn, op string, id connector.CBID) error {
	agents, err := c.Agents()
	if err != nil || slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == id }) {
		return nil
	}
	return connector.NoAgentError(op, id, agents)
}
