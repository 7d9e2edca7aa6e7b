package chi

// Go 1.19 stand-ins for the few newer library calls chi uses (oracle build only).

func slicesContains(s []methodTyp, v methodTyp) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}
