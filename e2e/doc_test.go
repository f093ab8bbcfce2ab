package e2e

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageIsDocumented fails for a package without a doc comment,
// and for an exported top-level name in a non-main package without a
// comment that starts with its name.
func TestEveryPackageIsDocumented(t *testing.T) {
	root := ".."
	dirs := map[string]bool{}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = true
		}
		return nil
	})
	for dir := range dirs {
		fset := token.NewFileSet()
		pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for name, pkg := range pkgs {
			documented := false
			for _, f := range pkg.Files {
				if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
					documented = true
				}
			}
			if !documented {
				t.Errorf("package %s (%s) has no doc comment", name, dir)
			}
			if name == "main" {
				continue
			}
			for path, f := range pkg.Files {
				for _, problem := range undocumented(f) {
					t.Errorf("%s: %s", path, problem)
				}
			}
		}
	}
}

// undocumented lists the exported top-level names of f whose doc comment is
// missing or does not start with the name. Methods are left out: most
// implement an interface (Error, ServeHTTP) documented where it is defined.
func undocumented(f *ast.File) []string {
	var out []string
	check := func(name string, doc *ast.CommentGroup) {
		if !ast.IsExported(name) {
			return
		}
		text := ""
		if doc != nil {
			text = doc.Text()
		}
		first := strings.Fields(text)
		switch {
		case len(first) == 0:
			out = append(out, name+" has no doc comment")
		case first[0] != name && !(len(first) > 1 && (first[0] == "A" || first[0] == "An" || first[0] == "The") && first[1] == name):
			out = append(out, fmt.Sprintf("the doc comment of %s starts with %q, not its name", name, first[0]))
		}
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				check(d.Name.Name, d.Doc)
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch sp := spec.(type) {
				case *ast.TypeSpec:
					doc := sp.Doc
					if doc == nil {
						doc = d.Doc
					}
					check(sp.Name.Name, doc)
				case *ast.ValueSpec:
					// A documented group (const ( // X is ... ) covers its
					// members.
					if d.Doc != nil && d.Lparen.IsValid() {
						continue
					}
					doc := sp.Doc
					if doc == nil {
						doc = d.Doc
					}
					for _, n := range sp.Names {
						check(n.Name, doc)
					}
				}
			}
		}
	}
	return out
}
