//go:build !linux

package proc

func checkProcEvents() error { return nil }

func checkNamespaces() error { return nil }

func namespaceUnknown() string { return "" }

func kernelVersion() (release string, major, minor int, unknown string) {
	return "", 0, 0, "this is not Linux"
}
