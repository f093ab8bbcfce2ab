package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteReplacesWholeAndLeavesNoTemporary: the file holds the new
// content, and nothing else is left in the directory.
func TestWriteReplacesWholeAndLeavesNoTemporary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "made")
	for _, content := range []string{"first, longer content", "second"} {
		if err := Write(dir, "f.json", []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "f.json"))
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("%d entries in the directory, want only f.json: %v", len(entries), entries)
	}
}

// TestWriteFailsCleanly: a directory that cannot be made is an error.
func TestWriteFailsCleanly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(file, "sub"), "f.json", []byte("x")); err == nil {
		t.Error("Write under a regular file succeeded")
	}
}
