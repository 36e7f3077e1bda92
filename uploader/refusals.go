package uploader

import (
	"context"
	"fmt"
	"sync"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/fault"
	"github.com/ferry-migrate/ferry/shared/refusal"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// probeName is the write probe's key in the directory it asks about, "<dir>.ferry-probe-<job>":
// named so that an operator who sees it in an access log knows what it is. ProbeWrite starts a
// multipart upload there and aborts it: no object is left, and it needs no permission beyond a PUT.
const probeName = ".ferry-probe-"

// denials decides what an AccessDenied on one object means (see refused).
//
// There is no breaker that stops the uploader after a run of refused objects. The probe asks where
// this job's keys live and an allowed answer is not reused for later refusals, so a policy that
// refuses every key refuses the probe at the first of them. What a breaker would add is stopping
// on a run of refused keys the probe says are the objects' own, and key lists are sorted: the keys
// of one refused prefix come together, so it would stop the uploader again on every restart and
// the job would never end. The cost:
// a policy that refuses the job's keys by something the probe does not share (a suffix, say)
// dead-letters them, each with the reason, to be replayed once it is fixed.
type denials struct {
	once  sync.Once
	judge refusal.Judge
}

// record notes an S3 key that S3 let this process write: the next probe asks next to it.
func (d *denials) record(s3Key string) { d.judge.Good(s3Key) }

// refused decides what an AccessDenied on s3Key means; err names the key. If S3 lets this process
// write next to the last key it wrote (or in s3Key's top-level directory), the refusal belongs to
// the object: the key is dead-lettered and the rest go on. If the probe is refused too, every key
// would be: the uploader stops instead of dead-lettering the backlog, and the message comes back
// when it is started again.
func (u *Uploader) refused(ctx context.Context, s3Key string, err error) error {
	u.denials.once.Do(func() {
		j := &u.denials.judge
		j.Target = func(_, dir string) string { return dir + probeName + u.Names.Job }
		j.Probe = func(ctx context.Context, key string) error { return u.Store.ProbeWrite(ctx, key) }
		j.Known = refusal.LastDone(u.JS, u.Names)
	})
	perr := u.denials.judge.Check(ctx, s3Key)
	switch {
	case perr == nil:
		return stage.Permanent(bus.ReasonUploadError, fmt.Errorf("%w: S3 refuses this object but lets ferry write others (an object lock, or a policy on its prefix); fix that and replay the key", err))
	case blobstore.IsAccessDenied(perr) || fault.KindOf(perr) == fault.Fatal:
		return stage.Fatal(fmt.Errorf("%w (a write probe was refused too: %v)", err, perr))
	case fault.KindOf(perr) == fault.Outage:
		return stage.Outage(fmt.Errorf("%w (the write probe found S3 unreachable: %v)", err, perr))
	}
	return stage.Transient(bus.ReasonUploadError, fmt.Errorf("%w (the write probe failed: %v)", err, perr))
}
