// Validate an AsyncAPI document with the official parser (@asyncapi/parser,
// from the npm registry; scripts/contract installs it): exit 1 with the
// parser's diagnostics on any error.
//   node scripts/lib/asyncapi-validate.mjs docs/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join('.') : '(document)';
  console.log(`${['error', 'warning', 'info', 'hint'][d.severity]}: ${where}: ${d.message}`);
}
if (!document || errors.length) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations, ${document.messages().length} messages`);
