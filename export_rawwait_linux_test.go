package connector

// RawWaitersForTest reports how many Config.RawWait receives of the process
// are in (or about to enter) a raw wait: a raw wait shows in a goroutine
// dump only as running, on another thread.
func RawWaitersForTest() int32 { return rawWaiters.Load() }

// RawWaitLimitForTest and SetRawWaitLimitForTest read and set the cached
// limit of raw waits (GOMAXPROCS-1 when it was last read).
func RawWaitLimitForTest() int32     { return rawLimit.Load() }
func SetRawWaitLimitForTest(n int32) { rawLimit.Store(n) }
