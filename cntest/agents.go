package cntest

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/cnlink/connector"
)

// AgentTable lists the handlers registered with [Kernel.Handle] in the format
// of /proc/net/connector, so that connector.Conn.Agents (and the ErrNoAgent
// check of connector.Call) see the fake's agents. Every fake agent is named
// "cntest".
func (s *socket) AgentTable() ([]byte, error) {
	k := s.k
	k.mu.Lock()
	ids := make([]connector.CBID, 0, len(k.handlers))
	for id := range k.handlers {
		ids = append(ids, id)
	}
	k.mu.Unlock()
	slices.SortFunc(ids, func(a, b connector.CBID) int {
		return cmp.Or(cmp.Compare(a.Idx, b.Idx), cmp.Compare(a.Val, b.Val))
	})
	b := []byte("Name            ID\n")
	for _, id := range ids {
		b = fmt.Appendf(b, "%-15s %d:%d\n", "cntest", id.Idx, id.Val)
	}
	return b, nil
}
