package images

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// HostPrograms returns the entries that make this machine's programs run
// in an image: each program (found in the system's sbin and bin
// directories when not a path) at the path it has here, every symbolic
// link on the way to it (Debian's /sbin -> usr/sbin), and for a dynamically
// linked program its ELF interpreter (the dynamic loader) and every shared
// library it needs, recursively, each where the loader finds it on this
// machine (DT_RUNPATH, DT_RPATH, /etc/ld.so.conf, the default directories),
// with the links on the way. Libraries a program loads with dlopen are not
// seen: a program that needs some must name them.
func HostPrograms(programs ...string) ([]Entry, error) {
	c := &hostCollector{entries: map[string]Entry{}, done: map[string]bool{}}
	dirs, err := ldSoConfDirs("/etc/ld.so.conf")
	if err != nil {
		return nil, err
	}
	c.libDirs = append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
	for _, p := range programs {
		if !strings.Contains(p, "/") {
			found, err := findProgram(p)
			if err != nil {
				return nil, err
			}
			p = found
		}
		if err := c.addELF(p); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// HostFiles returns the entries for files of this machine (with the links
// on the way to each), skipping those that do not exist when optional.
func HostFiles(optional bool, files ...string) ([]Entry, error) {
	c := &hostCollector{entries: map[string]Entry{}, done: map[string]bool{}}
	for _, f := range files {
		if _, err := os.Stat(f); optional && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if _, err := c.addPath(f); err != nil {
			return nil, err
		}
	}
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// SystemPath is the PATH of the images, and where HostPrograms looks.
const SystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func findProgram(name string) (string, error) {
	for _, d := range filepath.SplitList(SystemPath) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in %s (Debian: apt-get install the package that has it)", name, SystemPath)
}

type hostCollector struct {
	entries map[string]Entry
	done    map[string]bool // real paths of ELF files already followed
	libDirs []string
	class   elf.Class
	machine elf.Machine
}

// addPath adds p, following symbolic links component by component; each
// link becomes a Symlink entry and the file it ends at a File. It returns
// the real path.
func (c *hostCollector) addPath(p string) (string, error) {
	p = path.Clean(p)
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%s: not an absolute path", p)
	}
	resolved := "/"
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for hops := 0; len(rest) > 0; {
		cur := path.Join(resolved, rest[0])
		rest = rest[1:]
		st, err := os.Lstat(cur)
		if err != nil {
			return "", err
		}
		switch {
		case st.Mode()&os.ModeSymlink != 0:
			if hops++; hops > 40 {
				return "", fmt.Errorf("%s: too many symbolic links", p)
			}
			target, err := os.Readlink(cur)
			if err != nil {
				return "", err
			}
			c.entries[cur] = Entry{Path: cur, Kind: Symlink, Target: target}
			abs := target
			if !path.IsAbs(abs) {
				abs = path.Join(path.Dir(cur), target)
			}
			rest = append(strings.Split(strings.TrimPrefix(path.Clean(abs), "/"), "/"), rest...)
			resolved = "/"
		case st.IsDir():
			if len(rest) == 0 {
				return "", fmt.Errorf("%s: a directory", p)
			}
			resolved = cur
		case st.Mode().IsRegular():
			if len(rest) > 0 {
				return "", fmt.Errorf("%s: %s is not a directory", p, cur)
			}
			c.entries[cur] = Entry{Path: cur, Kind: File, Source: cur, Exec: st.Mode()&0o111 != 0}
			return cur, nil
		default:
			return "", fmt.Errorf("%s: %s is not a file, directory or link", p, cur)
		}
	}
	return "", fmt.Errorf("%s: a directory", p)
}

// addELF adds an ELF file and, if dynamic, its loader and libraries.
func (c *hostCollector) addELF(p string) error {
	real, err := c.addPath(p)
	if err != nil {
		return err
	}
	if c.done[real] {
		return nil
	}
	c.done[real] = true
	f, err := elf.Open(real)
	if err != nil {
		return err
	}
	defer f.Close()
	if c.class == elf.ELFCLASSNONE {
		c.class, c.machine = f.Class, f.Machine
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("reading the ELF interpreter: %w", err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if err := c.addELF(interp); err != nil {
			return fmt.Errorf("the ELF interpreter %s: %w", interp, err)
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return err
	}
	var runpath []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", "$ORIGIN"), "$ORIGIN", path.Dir(real))
				if d != "" {
					runpath = append(runpath, d)
				}
			}
		}
	}
	for _, lib := range needed {
		found, err := c.findLib(lib, runpath)
		if err != nil {
			return err
		}
		if err := c.addELF(found); err != nil {
			return fmt.Errorf("%s: %w", lib, err)
		}
	}
	return nil
}

// findLib finds a library as the loader would: a name with a slash is a
// path; otherwise the first file of that name, of this machine's ELF class
// and architecture, in the run path then the system's directories.
func (c *hostCollector) findLib(name string, runpath []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range append(runpath, c.libDirs...) {
		p := path.Join(d, name)
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		ok := f.Class == c.class && f.Machine == c.machine
		f.Close()
		if ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s not found in %v", name, append(runpath, c.libDirs...))
}

// ldSoConfDirs reads the loader's configuration: directories, one a line,
// and "include" lines with glob patterns.
func ldSoConfDirs(file string) ([]string, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		switch {
		case line == "", strings.HasPrefix(line, "hwcap "):
		case strings.HasPrefix(line, "include "):
			pattern := strings.TrimSpace(strings.TrimPrefix(line, "include "))
			if !path.IsAbs(pattern) {
				pattern = path.Join(path.Dir(file), pattern)
			}
			matches, err := filepath.Glob(pattern)
			if err != nil {
				return nil, err
			}
			sort.Strings(matches)
			for _, m := range matches {
				sub, err := ldSoConfDirs(m)
				if err != nil {
					return nil, err
				}
				dirs = append(dirs, sub...)
			}
		default:
			dirs = append(dirs, line)
		}
	}
	return dirs, sc.Err()
}
