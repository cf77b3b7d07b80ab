package dmlog

import (
	"fmt"

	"github.com/cnlink/connector/internal/capcheck"
)

// checkSysAdmin fails with ErrNoSysAdmin unless the process has
// CAP_SYS_ADMIN in its effective set.
func checkSysAdmin() error {
	ok, err := capcheck.SysAdmin()
	if err != nil {
		return fmt.Errorf("dmlog: %w", err)
	}
	if !ok {
		return ErrNoSysAdmin
	}
	return nil
}
