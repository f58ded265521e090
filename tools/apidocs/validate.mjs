// Validates the bridge's API documents with maintained validators:
// OpenAPI with @seriousme/openapi-schema-validator (the OpenAPI
// Initiative's JSON Schemas for 2.0 to 3.2, and every $ref resolved),
// AsyncAPI with @asyncapi/parser (the AsyncAPI spec's schemas and its
// Spectral rules). Usage: node validate.mjs FILE.json...; a file is
// OpenAPI or AsyncAPI by its top-level "openapi" or "asyncapi" member.
// Exits non-zero when any document has an error; warnings are printed.
import { readFile } from "node:fs/promises";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

async function validateOpenAPI(doc) {
  const validator = new Validator();
  const res = await validator.validate(doc);
  if (!res.valid) {
    // errors is a list of Ajv errors, or a string for a broken $ref.
    const errors = Array.isArray(res.errors)
      ? res.errors.map((e) => `${e.instancePath || "/"}: ${e.message} ${JSON.stringify(e.params)}`)
      : [String(res.errors)];
    return { errors, warnings: [] };
  }
  try {
    validator.resolveRefs(); // throws on a $ref that points nowhere
  } catch (err) {
    return { errors: [`$ref: ${err.message}`], warnings: [] };
  }
  return { errors: [], warnings: [], version: validator.version };
}

async function validateAsyncAPI(text) {
  const parser = new Parser();
  const diagnostics = await parser.validate(text);
  const fmt = (d) => `${d.path.join("/") || "/"}: ${d.message} (${d.code})`;
  return {
    errors: diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(fmt),
    warnings: diagnostics.filter((d) => d.severity !== DiagnosticSeverity.Error).map(fmt),
  };
}

let passed = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  const doc = JSON.parse(text);
  let kind, res;
  if (typeof doc.openapi === "string") {
    kind = `OpenAPI ${doc.openapi}`;
    res = await validateOpenAPI(doc);
  } else if (typeof doc.asyncapi === "string") {
    kind = `AsyncAPI ${doc.asyncapi}`;
    res = await validateAsyncAPI(text);
  } else {
    kind = "unknown";
    res = { errors: ["neither an OpenAPI nor an AsyncAPI document"], warnings: [] };
  }
  for (const w of res.warnings) console.log(`${file}: warning: ${w}`);
  for (const e of res.errors) console.log(`${file}: error: ${e}`);
  if (res.errors.length === 0) {
    passed++;
    console.log(`ok   ${file} (${kind})`);
  } else {
    failed++;
    console.log(`FAIL ${file} (${kind}): ${res.errors.length} errors`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
