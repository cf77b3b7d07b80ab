module github.com/cnlink/connector/internal/kmatrix

go 1.25.0

require golang.org/x/sys v0.43.0
