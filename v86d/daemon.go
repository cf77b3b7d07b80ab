package v86d

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// DaemonEnv is set in the environment of the daemon Daemonize starts.
const DaemonEnv = "CONNECTOR_V86D_DAEMON"

// Daemonize fits a helper to the way uvesafb starts it. When nobody listens
// on group 4, the kernel runs the program named by the module parameter v86d
// (call_usermodehelper with UMH_WAIT_PROC, argv {path}, environment HOME=/
// and PATH=/sbin:/bin), waits for it to exit, and then sends its task once
// more. So the program must exit soon, leaving behind a daemon that already
// listens.
//
// In the program the kernel started, Daemonize runs the same executable
// again with the same arguments, in a new session, with DaemonEnv set and
// standard input and output on /dev/null, waits until that daemon calls
// ready (or exits, or timeout passes), and returns daemon false: the
// program should then exit with status 0. In the daemon it returns daemon
// true, and ready, which the daemon must call once it has joined group 4.
func Daemonize(timeout time.Duration) (daemon bool, ready func() error, err error) {
	if os.Getenv(DaemonEnv) != "" {
		f := os.NewFile(3, "v86d-ready")
		return true, func() error {
			if f == nil {
				return errors.New("v86d: no readiness pipe on fd 3")
			}
			_, err := f.Write([]byte{1})
			f.Close()
			return err
		}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return false, nil, fmt.Errorf("v86d: finding the executable to daemonize: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return false, nil, fmt.Errorf("v86d: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), DaemonEnv+"=1")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = newSession()
	if err := cmd.Start(); err != nil {
		w.Close()
		return false, nil, fmt.Errorf("v86d: starting the daemon: %w", err)
	}
	w.Close()
	_ = r.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	n, err := r.Read(b[:])
	if n == 1 {
		_ = cmd.Process.Release()
		return false, nil, nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return false, nil, fmt.Errorf("v86d: the daemon did not report ready: %v", err)
}
