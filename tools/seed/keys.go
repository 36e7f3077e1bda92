package seed

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// The blob size spread: most images are tens of KiB, a few are large. A log-normal body with a
// median of 30 KiB and σ = 1 puts 80% of blobs between 8 and 110 KiB; on top of it 0.5% of keys are
// drawn uniformly from 1–2 MiB, the "few larger" ones that exercise big reads and multipart uploads.
const (
	MinSize    = 1 << 10 // smallest drawn size; explicit _s sizes may be smaller, even 0
	MaxSize    = 2 << 20 // largest drawn size
	medianSize = 30 << 10
	sigma      = 1.0
	largeShare = 0.005
	largeMin   = 1 << 20
	// maxExplicit bounds a _s size: a key must never ask Content for gigabytes.
	maxExplicit = 1 << 30
)

// Hash domains keep the kinds of keys apart: the i-th absent key is never the i-th seeded one.
const (
	domainKey      = "key"
	domainAbsent   = "absent"
	domainFallback = "fallback"
	domainSized    = "sized"
)

// keyHex is the 24 lowercase hex digits of a key, from sha256 over its domain, seed and index.
func keyHex(domain string, seed, i, extra int) string {
	var buf [64]byte
	b := append(buf[:0], "ferry-seed/"...)
	b = append(b, domain...)
	b = binary.BigEndian.AppendUint64(b, uint64(seed))
	b = binary.BigEndian.AppendUint64(b, uint64(i))
	b = binary.BigEndian.AppendUint64(b, uint64(extra))
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// Key is the i-th seeded key for seed, in the seed system's format: "t01", 24 hex digits, ".jpg".
func Key(seed, i int) string { return "t01" + keyHex(domainKey, seed, i, 0) + ".jpg" }

// AbsentKey is the i-th key that is listed but written nowhere: the fetcher must dead-letter it.
func AbsentKey(seed, i int) string { return "t01" + keyHex(domainAbsent, seed, i, 0) + ".jpg" }

// FallbackKey is the i-th key written only to the second target's table, so only fallback finds it.
func FallbackKey(seed, i int) string { return "t01" + keyHex(domainFallback, seed, i, 0) + ".jpg" }

// SizedKey is the i-th key with an explicit blob size: "t01" + 24 hex + "_s<size>.jpg".
func SizedKey(seed, i, size int) string {
	return "t01" + keyHex(domainSized, seed, i, size) + "_s" + strconv.Itoa(size) + ".jpg"
}

// explicitSize returns the size a key names with "_s<digits>" before its extension.
func explicitSize(key string) (int, bool) {
	base := key
	if i := strings.LastIndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	j := strings.LastIndex(base, "_s")
	if j < 0 {
		return 0, false
	}
	digits := base[j+2:]
	if len(digits) == 0 || len(digits) > 10 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n > maxExplicit {
		return 0, false
	}
	return n, true
}

// Size is the length of the blob for key: the _s size if the key names one, else drawn from the
// key's hash (see the constants above for the spread).
func Size(key string) int {
	if n, ok := explicitSize(key); ok {
		return n
	}
	sum := sha256.Sum256([]byte(key))
	return drawnSize(sum)
}

func drawnSize(sum [32]byte) int {
	r := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[0:8]), binary.LittleEndian.Uint64(sum[8:16])))
	if r.Float64() < largeShare {
		return largeMin + r.IntN(MaxSize-largeMin+1)
	}
	n := int(math.Exp(math.Log(medianSize) + sigma*r.NormFloat64()))
	return min(max(n, MinSize), largeMin-1)
}

// Content is the blob for key, Size(key) bytes, computed from the key alone: the AES-CTR key stream
// under sha256(key) (first half the AES key, second half the IV). Anyone holding the key can
// recompute and compare it, so tests and benchmarks never store expected bytes. AES-CTR rather than
// ChaCha8 because with AES-NI it is about five times faster (~7 GB/s against ~1.5 GB/s on one core
// here), and a benchmark of 200,000 keys computes every blob at least twice.
func Content(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	n, ok := explicitSize(key)
	if !ok {
		n = drawnSize(sum)
	}
	b := make([]byte, n)
	stream(sum).XORKeyStream(b, b) // b is zero, so it becomes the key stream itself
	return b
}

func stream(sum [32]byte) cipher.Stream {
	block, err := aes.NewCipher(sum[:16])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return cipher.NewCTR(block, sum[16:])
}

// Matches reports whether b is exactly the blob Content(key) would return, without allocating it.
func Matches(key string, b []byte) bool {
	if len(b) != Size(key) {
		return false
	}
	s := stream(sha256.Sum256([]byte(key)))
	var chunk [16 << 10]byte
	for len(b) > 0 {
		n := min(len(b), len(chunk))
		clear(chunk[:n])
		s.XORKeyStream(chunk[:n], chunk[:n])
		if !bytes.Equal(chunk[:n], b[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Keys is the key set of one seed run.
type Keys struct {
	Main     []string // written to the first target's table: the seeded keys, then the sized ones
	Fallback []string // written only to the second target's table
	Absent   []string // written nowhere
	seed     int
}

// PlanKeys lists the keys a seed run with these parameters writes; the same parameters always give
// the same keys, so seeding again rewrites the same rows.
func PlanKeys(seed, count, fallback, absent int, sizes []int) Keys {
	k := Keys{
		Main:     make([]string, 0, count+len(sizes)),
		Fallback: make([]string, 0, fallback),
		Absent:   make([]string, 0, absent),
		seed:     seed,
	}
	for i := range count {
		k.Main = append(k.Main, Key(seed, i))
	}
	for i, size := range sizes {
		k.Main = append(k.Main, SizedKey(seed, i, size))
	}
	for i := range fallback {
		k.Fallback = append(k.Fallback, FallbackKey(seed, i))
	}
	for i := range absent {
		k.Absent = append(k.Absent, AbsentKey(seed, i))
	}
	return k
}

// All is every key, shuffled the same way for the same seed: a key list where the absent, fallback
// and large keys are spread through the run rather than bunched at its end.
func (k Keys) All() []string {
	all := make([]string, 0, len(k.Main)+len(k.Fallback)+len(k.Absent))
	all = append(all, k.Main...)
	all = append(all, k.Fallback...)
	all = append(all, k.Absent...)
	r := rand.New(rand.NewPCG(uint64(k.seed), 0x666572727973))
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all
}
