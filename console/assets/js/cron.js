// A cron schedule in words, for the builder's preview: the common shapes said plainly,
// the rest field by field. The orchestrator's parser decides what is valid; this only
// reads it back to the person writing it.

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const MONTHS = ["", "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

function two(n) {
  return String(n).padStart(2, "0");
}

function isNum(s) {
  return /^\d+$/.test(s);
}

function days(field) {
  if (field === "*") return null;
  if (field === "1-5") return "on weekdays (Monday to Friday)";
  if (field === "0,6" || field === "6,0") return "on weekends";
  const named = field.split(",").map((part) => {
    const [a, b] = part.split("-");
    if (b !== undefined && isNum(a) && isNum(b)) return `${DAYS[Number(a)]} to ${DAYS[Number(b)]}`;
    return isNum(part) ? DAYS[Number(part)] : part;
  });
  return named.every(Boolean) ? `on ${named.join(", ")}` : `on weekdays ${field}`;
}

// "every weekday at 09:00 (UTC)"-style text, or why it cannot be read.
export function describeCron(expr) {
  const f = String(expr || "").trim().split(/\s+/).filter(Boolean);
  if (f.length !== 5 && f.length !== 6) return `A schedule has 5 fields (minute hour day month weekday), or 6 with seconds first; this has ${f.length}.`;
  const [sec, min, hour, dom, mon, dow] = f.length === 6 ? f : ["0", ...f];
  const parts = [];
  if (sec !== "0") parts.push(sec.startsWith("*/") ? `every ${sec.slice(2)} seconds` : `at second ${sec}`);
  if (min === "*" && hour === "*") parts.push(sec === "0" ? "every minute" : "");
  else if (min.startsWith("*/") && hour === "*") parts.push(`every ${min.slice(2)} minutes`);
  else if (isNum(min) && hour === "*") parts.push(`at minute ${min} of every hour`);
  else if (isNum(min) && isNum(hour)) parts.push(`at ${two(hour)}:${two(min)}`);
  else if (isNum(min) && hour.startsWith("*/")) parts.push(`at minute ${min} every ${hour.slice(2)} hours`);
  else parts.push(`at minute ${min}, hour ${hour}`);
  const d = days(dow);
  if (dom !== "*") parts.push(isNum(dom) ? `on day ${dom} of the month` : `on days ${dom} of the month`);
  if (mon !== "*") parts.push(isNum(mon) && MONTHS[Number(mon)] ? `in ${MONTHS[Number(mon)]}` : `in months ${mon}`);
  if (d) parts.push(d);
  else if (dom === "*" && isNum(hour)) parts.push("every day");
  const text = parts.filter(Boolean).join(", ");
  return `Runs ${text}.`;
}
