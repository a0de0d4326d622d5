"""``python -m verifier.bisect.soak_child JOB.json RESULT.json``: one bisect soak of one
commit in this process (a cluster worker's child, see ``verifier.bisect.remote``), written
as its ``Observation``. Any other exit is a failure whose message is the last line of its
output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from verifier.bisect.remote import SoakJob, options_from_json
from verifier.bisect.tester import CommitTester
from verifier.build.builder import Builder, BuildRequest
from verifier.build.sanitizer import Sanitizer
from verifier.errors import VerifierError
from verifier.paths import CacheLayout, default_cache_dir
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.util.atomic import write_json, write_text
from verifier.verify import VerifyCore
from verifier.vocabulary import HangClass


def main(job_path: Path, result_path: Path) -> int:
    job = SoakJob.from_json(json.loads(job_path.read_text(encoding="utf-8")))
    layout = CacheLayout(default_cache_dir().expanduser().resolve())
    inputs = job_path.parent / "inputs"
    patches = []
    for index, (name, text) in enumerate(job.patches, 1):
        path = inputs / f"{index:02d}" / name
        write_text(path, text)
        patches.append(path)
    scenario_file = inputs / "scenario" / f"{job.scenario}.toml"
    write_text(scenario_file, job.scenario_text)
    try:
        debian = job.source.startswith("debian")
        choice = choose_source(
            None if debian else job.source, job.source if debian else None, layout
        )
        builder = Builder(layout.builds, layout.locks)
        request = BuildRequest(
            choice,
            job.sha,
            tuple(patches),
            reverse=job.reverse,
            cflags=job.cflags,
            sanitizer=None if job.sanitizer is None else Sanitizer(job.sanitizer),
            tls=job.tls,
        )
        options = options_from_json(job.options, load_scenario(str(scenario_file)))
        tester = CommitTester(VerifyCore(builder, layout.tools), request, options, job_path.parent)
        if job.reference_class:  # the bad end's class: what --amplify auto hunts from now
            tester.reference_class = HangClass(job.reference_class)
        observation = tester.test(job.sha, job.soak_s, job.reference_bug_key)
    except VerifierError as error:
        sys.stderr.write(f"{error.message}\n")
        return int(error.status)
    write_json(result_path, observation.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
