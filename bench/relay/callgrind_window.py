#!/usr/bin/env python3
"""Instructions per relayed message over a fixed window of batches, from a callgrind run of
relay_bench that dumps once per batch (bench/relay/README.md, "The outbound's cost per
message"):

    valgrind --tool=callgrind --callgrind-out-file=DIR/out \
        --dump-before='*relay_pipeline::receive()' \
        --toggle-collect='*relay_pipeline::receive()' \
        --toggle-collect='*relay_pipeline::group_commit()' \
        --toggle-collect='*relay_pipeline::deliver()' --toggle-collect='*dispatcher::run(long)' \
        relay_bench --benchmark_filter='^relay/rcpt:1/' --benchmark_min_time=16
    callgrind_window.py DIR 21 332

Dump out.(k+1) holds batch k (it is taken before batch k+1's receive()). The same window in
every binary compared gives the same work (the batches are deterministic): the first batches'
DNS lookups and connects, and the reconnects every ~156 batches, weigh the same. Prints all
stages and stages 3-4 (the inclusive cost of deliver(), or dispatcher::run in the hand-pumped
reference) per message (64 per batch). With `--cache-sim=yes` it prints every event per message
too (D1mr, DLmw, ...: the cache simulation's misses; issue 16, s12-benchgap).
"""
import re
import sys

STAGE4 = re.compile(r'relay_pipeline::deliver\(\)|dispatcher::run\(long\)')
MESSAGES_PER_BATCH = 64


def batch_costs(path):
    """(every event's collected cost, Ir inside the calls to stage 4, event names) of one dump
    file; the first event is Ir."""
    names, callee, in_call, total, stage4, events = {}, None, False, [], 0, ['Ir']
    with open(path) as dump:
        for line in dump:
            if line.startswith('events:'):
                events = line.split()[1:]
                continue
            named = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
            if named:
                if named.group(3):
                    names[named.group(2)] = named.group(3)
                callee = names.get(named.group(2), '') if named.group(1) == 'cfn' else None
                continue
            if line.startswith('calls='):
                in_call = callee is not None and bool(STAGE4.search(callee))
            elif in_call:  # the line after calls=: the call's inclusive cost
                stage4 += int(line.split()[1])
                in_call = False
            elif line.startswith(('totals:', 'summary:')) and not total:
                total = [int(field) for field in line.split()[1:]]
    return total, stage4, events


def main():
    directory, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    total, stage4, events = [], 0, []
    for batch in range(first, last + 1):
        batch_total, batch_stage4, events = batch_costs(f'{directory}/out.{batch + 1}')
        total = [a + b for a, b in zip(total, batch_total)] if total else batch_total
        stage4 += batch_stage4
    messages = (last - first + 1) * MESSAGES_PER_BATCH
    print(f'batches {first}..{last}: {total[0] / messages:.0f} Ir per message, '
          f'stages 3-4 {stage4 / messages:.0f}')
    if len(events) > 1:
        print('per message: ' + ' '.join(
            f'{name} {cost / messages:.1f}' for name, cost in zip(events, total)))


if __name__ == '__main__':
    main()
