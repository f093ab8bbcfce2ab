package guard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/internal/atomicfile"
)

// lkgFile is the last-known-good state's name in the state dir.
const lkgFile = "lkg.json"

// lkgVersion is the file format's version; a file of another is not used.
const lkgVersion = 1

// lkgState is the file's content.
type lkgState struct {
	Version  int                            `json:"version"`
	SavedAt  time.Time                      `json:"saved_at"`
	Services map[string][]*catalog.Instance `json:"services"`
}

// saveLKG writes t to dir atomically (atomicfile), so a crash at any
// point leaves either the old state or the new one, whole.
func saveLKG(dir string, t *Table, now time.Time) error {
	b, err := json.Marshal(lkgState{Version: lkgVersion, SavedAt: now.UTC(), Services: t.Services})
	if err != nil {
		return fmt.Errorf("guard: encoding the state: %w", err)
	}
	if err := atomicfile.Write(dir, lkgFile, b); err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	return nil
}

// loadLKG reads the state in dir. It returns nil and no error when there is
// none, and an error saying why when there is one it will not use: unreadable,
// of another version, older than maxAge, or with instances that break the
// catalog's rules.
func loadLKG(dir string, maxAge time.Duration, now time.Time) (*lkgState, error) {
	path := filepath.Join(dir, lkgFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	var st lkgState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("guard: %s: %w", path, err)
	}
	if st.Version != lkgVersion {
		return nil, fmt.Errorf("guard: %s: format version %d, want %d", path, st.Version, lkgVersion)
	}
	if age := now.Sub(st.SavedAt); age > maxAge {
		return nil, fmt.Errorf("guard: %s is %s old, past the maximum age of %s", path, age.Round(time.Second), maxAge)
	}
	for svc, ins := range st.Services {
		for _, in := range ins {
			if in == nil || in.Service != svc || catalog.ValidateName("service", svc) != nil || catalog.ValidateName("id", in.ID) != nil {
				return nil, fmt.Errorf("guard: %s: service %q holds an instance that does not belong to it", path, svc)
			}
		}
	}
	return &st, nil
}
