"""What the benchmark scripts share."""


def smallest_heap(works, lo, hi, grain, span, step=None):
    """The smallest heap size (in the caller's unit) from which every size up
    to `span` above, probed in `step`s (default `grain`), completes:
    `works(size)` runs the job once. The heap's fragmentation makes single
    sizes pass or fail by chance, hence the span. Bisects to `grain`; None
    when even `hi` fails."""
    step = step or grain
    if not works(hi):
        return None
    while hi - lo > grain:
        mid = (lo + hi) // 2 // grain * grain
        if works(mid):
            hi = mid
        else:
            lo = mid
    while True:
        failed = [h for h in range(hi, hi + span + 1, step) if not works(h)]
        if not failed:
            return hi
        hi = failed[-1] + grain
