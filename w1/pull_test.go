package w1_test

import "iter"

// iterPull turns an event sequence into a next function.
func iterPull[E any](seq iter.Seq2[E, error]) (func() (E, error), func()) {
	next, stop := iter.Pull2(seq)
	return func() (E, error) {
		e, err, ok := next()
		if !ok {
			var zero E
			return zero, errEnded
		}
		return e, err
	}, stop
}

var errEnded = errorString("the sequence ended")

type errorString string

func (e errorString) Error() string { return string(e) }
