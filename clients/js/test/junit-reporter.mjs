// A node:test reporter that writes JUnit XML, for tools/test-summary: Node
// 18 has no built-in junit reporter. Only leaf tests become <testcase>s (a
// test file run in its own process is reported as a parent test); a file
// that fails before any test ran counts as one failed case.
//
//   node --test --test-reporter=./clients/js/test/junit-reporter.mjs \
//        --test-reporter-destination=out.xml FILES...

const esc = (s) => String(s).replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c])
  // XML 1.0 cannot carry most control characters, not even escaped.
  .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "");

export default async function* junitReporter(source) {
  const cases = [];
  let prevNesting = -1;
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const d = event.data;
    const leaf = prevNesting <= d.nesting;
    prevNesting = d.nesting;
    if (!leaf || (d.details && d.details.type === "suite")) continue;
    const err = d.details && d.details.error;
    cases.push({
      name: d.name,
      file: d.file || "",
      seconds: ((d.details && d.details.duration_ms) || 0) / 1000,
      failure: event.type === "test:fail" ? String((err && (err.cause || err).stack) || err || "failed") : null,
      skipped: d.skip !== undefined || d.todo !== undefined,
    });
  }
  const failures = cases.filter((c) => c.failure).length;
  let xml = `<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="clients-js" tests="${cases.length}" failures="${failures}">\n`;
  for (const c of cases) {
    xml += `  <testcase classname="${esc(c.file)}" name="${esc(c.name)}" time="${c.seconds.toFixed(3)}"`;
    if (c.failure) xml += `>\n    <failure message="failed">${esc(c.failure)}</failure>\n  </testcase>\n`;
    else if (c.skipped) xml += `>\n    <skipped/>\n  </testcase>\n`;
    else xml += "/>\n";
  }
  yield xml + "</testsuite></testsuites>\n";
}
