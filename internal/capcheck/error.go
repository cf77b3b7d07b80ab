package capcheck

import "os"

// A MissingError reports a capability the process lacks; it matches
// os.ErrPermission.
type MissingError struct{ Msg string }

func (e *MissingError) Error() string { return e.Msg }

// Is makes a *MissingError match os.ErrPermission.
func (e *MissingError) Is(target error) bool { return target == os.ErrPermission }
