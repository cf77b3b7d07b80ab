//go:build !linux

package proc

func checkProcEvents() error { return nil }

func checkNamespaces() error { return nil }

func namespaceUnknown() string { return "" }
