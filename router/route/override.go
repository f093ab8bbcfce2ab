package route

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The commands of the route language.
const (
	CmdAdd    = "add"
	CmdDel    = "del"
	CmdWeight = "weight"
)

// Override is one line of Fabio's route language, from the router's
// config file:
//
//	route add <svc> <src> <dst>[ weight <w>][ tags "<t1>,<t2>"][ opts "k=v k=v"]
//	route del <svc>[ <src>[ <dst>]]
//	route del [<svc> ]tags "<t1>,<t2>"
//	route weight <svc> <src> weight <w>[ tags "<t1>,<t2>"]
//	route weight <src> weight <w> tags "<t1>,<t2>"
type Override struct {
	Line    int    // line number in the text it came from, 1 first
	Cmd     string // CmdAdd, CmdDel or CmdWeight
	Service string // "" when the line names none
	Src     string // the route: "host/path", "/path" or ":port"
	Dst     string // add: the target URL; del: the target to remove
	Weight  float64
	Tags    []string
	Opts    string // add: the route's options, space separated
}

// String is o as a line of the route language.
func (o Override) String() string {
	f := []string{"route", o.Cmd}
	for _, s := range []string{o.Service, o.Src, o.Dst} {
		if s != "" {
			f = append(f, s)
		}
	}
	if o.Cmd == CmdWeight || o.Weight != 0 {
		f = append(f, "weight", strconv.FormatFloat(o.Weight, 'g', -1, 64))
	}
	if len(o.Tags) > 0 {
		f = append(f, "tags", strconv.Quote(strings.Join(o.Tags, ",")))
	}
	if o.Opts != "" {
		f = append(f, "opts", strconv.Quote(o.Opts))
	}
	return strings.Join(f, " ")
}

// ParseOverrides parses the route language: one command a line; blank
// lines and lines starting with # or // are skipped. Errors name the line
// and what is wrong with it; so do two route add lines for one route with
// different options.
func ParseOverrides(text string) ([]Override, error) {
	var out []Override
	var errs []string
	opts := map[string]Override{} // route key → the first route add line for it
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "//") {
			continue
		}
		o, err := parseLine(line)
		if err == "" {
			o.Line = i + 1
			var c compiled
			c, err = compile(o)
			if err == "" && o.Cmd == CmdAdd {
				if first, ok := opts[c.spec.Key]; ok {
					fc, _ := compile(first)
					if fo, co := fc.spec.options(), c.spec.options(); fo != co {
						err = fmt.Sprintf("route %s has options %q here and %q on line %d: make them agree", c.spec.Key, co, fo, first.Line)
					}
				} else {
					opts[c.spec.Key] = o
				}
			}
		}
		if err != "" {
			errs = append(errs, fmt.Sprintf("line %d: %s", i+1, err))
			continue
		}
		out = append(out, o)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("route: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

// token is one word of a line; quoted words lose their quotes.
type token struct {
	s      string
	quoted bool
}

func tokenize(line string) ([]token, string) {
	var toks []token
	for {
		line = strings.TrimLeft(line, " \t")
		if line == "" {
			return toks, ""
		}
		if line[0] == '"' {
			end := strings.IndexByte(line[1:], '"')
			if end < 0 {
				return nil, "a quote is not closed"
			}
			toks = append(toks, token{line[1 : end+1], true})
			line = line[end+2:]
			continue
		}
		end := strings.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		toks = append(toks, token{line[:end], false})
		line = line[end:]
	}
}

// parseLine parses the syntax of one line; compile checks its meaning.
func parseLine(line string) (Override, string) {
	var o Override
	t, bad := tokenize(line)
	if bad != "" {
		return o, bad
	}
	word := func(i int) string {
		if i < len(t) && !t[i].quoted {
			return t[i].s
		}
		return ""
	}
	if word(0) != "route" {
		return o, fmt.Sprintf("%q is not a command: lines start with route add, route del or route weight", line)
	}
	o.Cmd = word(1)
	// rest parses the optional clauses from t[i:], each at most once.
	rest := func(i int, allowed ...string) string {
		seen := map[string]bool{}
		for ; i < len(t); i += 2 {
			k := word(i)
			if !slices.Contains(allowed, k) || seen[k] {
				return fmt.Sprintf("unexpected %q: after the route come %s", t[i].s, strings.Join(allowed, ", "))
			}
			seen[k] = true
			if i+1 >= len(t) {
				return fmt.Sprintf("%s needs a value", k)
			}
			v := t[i+1]
			switch k {
			case "weight":
				w, err := strconv.ParseFloat(v.s, 64)
				if err != nil || v.quoted {
					return fmt.Sprintf("weight %q is not a number: give a fraction, e.g. 0.05 for 5%%", v.s)
				}
				o.Weight = w
			case "tags", "opts":
				if !v.quoted {
					return fmt.Sprintf("%s needs a quoted value, e.g. %s \"%s\"", k, k, v.s)
				}
				if k == "opts" {
					o.Opts = strings.Join(strings.Fields(v.s), " ")
					continue
				}
				for _, tag := range strings.Split(v.s, ",") {
					if tag = strings.TrimSpace(tag); tag != "" {
						o.Tags = append(o.Tags, tag)
					}
				}
				if len(o.Tags) == 0 {
					return "tags \"\" names no tag"
				}
			}
		}
		return ""
	}
	switch o.Cmd {
	case CmdAdd:
		if word(2) == "" || word(3) == "" || word(4) == "" {
			return o, "route add needs a service, a route and a target: route add <svc> <src> <dst>"
		}
		o.Service, o.Src, o.Dst = word(2), word(3), word(4)
		return o, rest(5, "weight", "tags", "opts")
	case CmdDel:
		switch {
		case word(2) == "tags":
			return o, rest(2, "tags")
		case word(2) == "":
			return o, "route del needs a service or tags: route del <svc>[ <src>[ <dst>]] or route del tags \"<t>\""
		case word(3) == "tags":
			o.Service = word(2)
			return o, rest(3, "tags")
		}
		o.Service, o.Src, o.Dst = word(2), word(3), word(4)
		if len(t) > 5 || (len(t) > 2 && o.Service == "") || (len(t) > 3 && o.Src == "") || (len(t) > 4 && o.Dst == "") {
			return o, "route del takes at most a service, a route and a target"
		}
		return o, ""
	case CmdWeight:
		var err string
		switch {
		case word(3) == "weight" && word(2) != "":
			o.Src = word(2)
			err = rest(3, "weight", "tags")
			if err == "" && len(o.Tags) == 0 {
				err = "route weight without a service needs tags: route weight <src> weight <w> tags \"<t>\""
			}
		case word(4) == "weight" && word(2) != "" && word(3) != "":
			o.Service, o.Src = word(2), word(3)
			err = rest(4, "weight", "tags")
		default:
			err = "route weight needs a route and a weight: route weight <svc> <src> weight <w>[ tags \"<t>\"]"
		}
		return o, err
	}
	return o, fmt.Sprintf("route %s is not a command: use route add, route del or route weight", o.Cmd)
}

// compiled is an Override checked and made ready to apply.
type compiled struct {
	Override
	spec  Spec   // add: the route and its options
	key   string // del, weight: the route key, "" for any
	addr  string // add: the target's host:port; del: the one to remove, "" for any
	group string // weight: the name of the canary group it makes
}

// compile checks an Override's meaning: its route, target and weight.
func compile(o Override) (compiled, string) {
	c := compiled{Override: o}
	switch o.Cmd {
	case CmdAdd, CmdDel, CmdWeight:
	default:
		return c, fmt.Sprintf("route %s is not a command: use route add, route del or route weight", o.Cmd)
	}
	if o.Cmd == CmdAdd || o.Cmd == CmdWeight {
		if !(o.Weight >= 0 && o.Weight <= 1) {
			return c, fmt.Sprintf("weight %g is not a fraction between 0 and 1: 0.05 is 5%% of the route's traffic", o.Weight)
		}
	}
	switch {
	case o.Cmd == CmdAdd && (o.Service == "" || o.Src == "" || o.Dst == ""):
		return c, "route add needs a service, a route and a target"
	case o.Cmd == CmdDel && o.Service == "" && len(o.Tags) == 0:
		return c, "route del needs a service or tags"
	case o.Cmd == CmdWeight && (o.Src == "" || (o.Service == "" && len(o.Tags) == 0)):
		return c, "route weight needs a route, and a service or tags"
	}
	proto := ""
	if o.Dst != "" {
		var err string
		c.addr, proto, err = parseTarget(o.Dst)
		if err != "" {
			return c, err
		}
	}
	if o.Cmd == CmdAdd {
		s, err := parseSpec(o.Src, strings.Fields(o.Opts), proto)
		if err != "" {
			return c, err
		}
		if s.Weight != 0 {
			return c, "opts \"weight=...\" is for tags: write route add ... weight <w>"
		}
		c.spec = s
		return c, ""
	}
	if o.Opts != "" {
		return c, "opts are only for route add"
	}
	if o.Src != "" {
		key, err := parseKey(o.Src)
		if err != "" {
			return c, err
		}
		c.key = key
	}
	return c, ""
}

// parseKey gives the key of a route named on a del or weight line: a
// TCP route is named by its port alone.
func parseKey(src string) (string, string) {
	proto := ""
	if strings.HasPrefix(src, ":") {
		proto = ProtoTCP
	}
	s, err := parseSpec(src, nil, proto)
	return s.Key, err
}

// parseTarget parses a route add target URL such as http://10.0.0.1:8080/
// into host:port and the protocol it implies.
func parseTarget(dst string) (addr, proto, problem string) {
	u, err := url.Parse(dst)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", "", fmt.Sprintf("target %q is not a URL such as http://10.0.0.1:8080/", dst)
	}
	port := u.Port()
	switch u.Scheme {
	case "http", "grpc":
		port = cmp.Or(port, "80")
	case "https":
		port = cmp.Or(port, "443")
	case "tcp":
		if port == "" {
			return "", "", fmt.Sprintf("target %q has no port: tcp://host:port", dst)
		}
	default:
		return "", "", fmt.Sprintf("target %q: the scheme must be http, https, tcp or grpc", dst)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Sprintf("target %q: port %q is not 1 to 65535", dst, port)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", fmt.Sprintf("target %q: give scheme://host:port only (use opts \"prepend=/path\" to add a path)", dst)
	}
	return net.JoinHostPort(u.Hostname(), port), u.Scheme, ""
}

// matches reports whether a del or weight line applies to a member of
// service on route key with address addr and tags.
func (c *compiled) matches(service, key, addr string, tags []string) bool {
	return (c.Service == "" || c.Service == service) &&
		(c.key == "" || c.key == key) &&
		(c.addr == "" || c.addr == addr) &&
		hasAll(tags, c.Tags)
}

// hasAll reports whether have holds every tag in want.
func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
