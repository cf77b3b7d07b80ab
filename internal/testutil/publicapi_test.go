package testutil

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPublicAPINoInternal walks the module's public packages and fails for
// every exported declaration whose documented shape names a type or value of
// an internal package: a signature, a type's exported fields and methods, an
// exported var's or const's type and value (go doc prints the value). Users
// cannot name such a type, so errors.As and type switches on it are
// impossible for them.
func TestPublicAPINoInternal(t *testing.T) {
	if InMatrix() {
		t.Skip("a check of the module's source, which the kernel matrix guest does not have (only test binaries and testdata); it runs on the host")
	}
	walkModuleGo(t, true, 0, func(fset *token.FileSet, rel string, f *ast.File) {
		for _, where := range internalInAPI(f) {
			t.Errorf("%s:%d: exported %s names internal package %s, which users cannot import", rel, fset.Position(where.pos).Line, where.decl, where.pkg)
		}
	})
}

// walkModuleGo parses each non-test Go file of the module's library
// packages (not main, testdata, dot directories or nested modules; with
// public, not internal/ either) and calls fn with it and its path relative
// to the module root. It fails the test if it read fewer than 20 files,
// which would mean the walk started in the wrong place.
func walkModuleGo(t *testing.T, public bool, mode parser.Mode, fn func(fset *token.FileSet, rel string, f *ast.File)) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (public && name == "internal" || name == "testdata" || strings.HasPrefix(name, ".") || fileExists(filepath.Join(path, "go.mod"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, mode|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
		files++
		rel, _ := filepath.Rel(root, path)
		fn(fset, rel, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Fatalf("read only %d files of library packages below %s", files, root)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

type apiLeak struct {
	decl, pkg string
	pos       token.Pos
}

// internalInAPI returns the uses of internal packages in f's exported API.
func internalInAPI(f *ast.File) []apiLeak {
	internal := map[string]string{} // import name -> path
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if !strings.Contains(p, "/internal/") && !strings.HasPrefix(p, "internal/") {
			continue
		}
		name := p[strings.LastIndex(p, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		internal[name] = p
	}
	var leaks []apiLeak
	check := func(decl string, n ast.Node) {
		if n == nil {
			return
		}
		ast.Inspect(n, func(n ast.Node) bool {
			if _, ok := n.(*ast.FuncLit); ok {
				return false // a body: not shown
			}
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && internal[id.Name] != "" {
					leaks = append(leaks, apiLeak{decl, internal[id.Name], sel.Pos()})
				}
			}
			return true
		})
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || d.Recv != nil && !exportedRecv(d.Recv) {
				continue
			}
			check("func "+d.Name.Name, d.Type)
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if !s.Name.IsExported() {
						continue
					}
					checkType("type "+s.Name.Name, s.Type, check)
				case *ast.ValueSpec:
					for i, n := range s.Names {
						if !n.IsExported() {
							continue
						}
						check(n.Name, s.Type)
						if i < len(s.Values) {
							check(n.Name, s.Values[i])
						} else if len(s.Values) == 1 {
							check(n.Name, s.Values[0])
						}
					}
				}
			}
		}
	}
	return leaks
}

// checkType checks what go doc shows of a type: of a struct, the exported
// fields (an embedded field is exported when its type name is).
func checkType(decl string, typ ast.Expr, check func(string, ast.Node)) {
	st, ok := typ.(*ast.StructType)
	if !ok {
		check(decl, typ)
		return
	}
	for _, f := range st.Fields.List {
		if len(f.Names) == 0 {
			if embeddedExported(f.Type) {
				check(decl, f.Type)
			}
			continue
		}
		for _, n := range f.Names {
			if n.IsExported() {
				check(decl+"."+n.Name, f.Type)
				break
			}
		}
	}
}

func embeddedExported(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.StarExpr:
		return embeddedExported(e.X)
	case *ast.Ident:
		return e.IsExported()
	case *ast.SelectorExpr:
		return e.Sel.IsExported()
	case *ast.IndexExpr:
		return embeddedExported(e.X)
	}
	return false
}

func exportedRecv(r *ast.FieldList) bool {
	if len(r.List) == 0 {
		return false
	}
	e := r.List[0].Type
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.IsExported()
		default:
			return false
		}
	}
}
