package testutil

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestDocCommentsStartWithName walks the module's public packages (and
// this one) and fails for every exported declaration whose doc comment
// does not start with its name ("A", "An" or "The" may come first; a doc link [Name] is the name), as go
// doc readers expect and staticcheck's ST1020-ST1022 check: "String
// reads..." on func InfoString was one.
func TestDocCommentsStartWithName(t *testing.T) {
	if InMatrix() {
		t.Skip("a check of the module's source, which the kernel matrix guest does not have (only test binaries and testdata); it runs on the host")
	}
	walkModuleGo(t, false, parser.ParseComments, func(fset *token.FileSet, rel string, f *ast.File) {
		check := func(name string, doc *ast.CommentGroup) {
			if doc == nil || !ast.IsExported(name) {
				return
			}
			text := doc.Text()
			for _, article := range []string{"A ", "An ", "The ", "Deprecated: "} {
				text = strings.TrimPrefix(text, article)
			}
			if first, _, _ := strings.Cut(text, " "); strings.Trim(first, "[],.:\n") != name {
				t.Errorf("%s:%d: the doc comment of %s starts %q, not with its name", rel, fset.Position(doc.Pos()).Line, name, firstLine(doc.Text()))
			}
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv != nil && !exportedRecv(d.Recv) {
					continue
				}
				check(d.Name.Name, d.Doc)
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					doc := d.Doc
					if d.Lparen.IsValid() {
						doc = nil // a group's comment describes the group
					}
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if s.Doc != nil {
							doc = s.Doc
						}
						check(s.Name.Name, doc)
					case *ast.ValueSpec:
						if s.Doc != nil {
							doc = s.Doc
						}
						if len(s.Names) == 1 {
							check(s.Names[0].Name, doc)
						}
					}
				}
			}
		}
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
