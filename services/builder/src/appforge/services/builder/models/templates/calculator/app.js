"use strict";

// The expression is parsed by hand (a tokenizer and a recursive-descent parser): user
// input is data and is never run as code.

const MAX_INPUT_LENGTH = 64;
const MAX_EXPRESSION_LENGTH = 256;
const SIGNIFICANT_DIGITS = 12;
const ERROR_DISPLAY = "Error";

const OPERATORS = new Map([
  ["+", "+"],
  ["-", "-"],
  ["\u2212", "-"],
  ["*", "*"],
  ["x", "*"],
  ["\u00d7", "*"],
  ["/", "/"],
  ["\u00f7", "/"],
]);

class CalcError extends Error {}

function isDigitOrPoint(ch) {
  return (ch >= "0" && ch <= "9") || ch === ".";
}

function parseNumber(text) {
  if (text === "." || text.split(".").length > 2) {
    throw new CalcError("Malformed number: " + text);
  }
  return Number(text);
}

function tokenize(expression) {
  const tokens = [];
  let i = 0;
  while (i < expression.length) {
    const ch = expression[i];
    if (ch.trim() === "") {
      i += 1;
    } else if (isDigitOrPoint(ch)) {
      let end = i;
      while (end < expression.length && isDigitOrPoint(expression[end])) {
        end += 1;
      }
      tokens.push({ kind: "number", value: parseNumber(expression.slice(i, end)) });
      i = end;
    } else if (OPERATORS.has(ch)) {
      tokens.push({ kind: "operator", value: OPERATORS.get(ch) });
      i += 1;
    } else if (ch === "(" || ch === ")") {
      tokens.push({ kind: ch, value: ch });
      i += 1;
    } else {
      throw new CalcError("Unexpected character: " + ch);
    }
  }
  return tokens;
}

// Grammar, lowest precedence first:
//   expression = term (("+" | "-") term)*
//   term       = unary (("*" | "/") unary)*
//   unary      = ("+" | "-") unary | primary
//   primary    = number | "(" expression ")"
function parse(tokens) {
  let position = 0;

  function isOperator(token, a, b) {
    return token !== undefined && token.kind === "operator" &&
      (token.value === a || token.value === b);
  }

  function expression() {
    let value = term();
    while (isOperator(tokens[position], "+", "-")) {
      const operator = tokens[position].value;
      position += 1;
      const right = term();
      value = operator === "+" ? value + right : value - right;
    }
    return value;
  }

  function term() {
    let value = unary();
    while (isOperator(tokens[position], "*", "/")) {
      const operator = tokens[position].value;
      position += 1;
      const right = unary();
      if (operator === "*") {
        value = value * right;
      } else if (right === 0) {
        throw new CalcError("Division by zero");
      } else {
        value = value / right;
      }
    }
    return value;
  }

  function unary() {
    if (isOperator(tokens[position], "+", "-")) {
      const operator = tokens[position].value;
      position += 1;
      const operand = unary();
      return operator === "-" ? -operand : operand;
    }
    return primary();
  }

  function primary() {
    const token = tokens[position];
    position += 1;
    if (token === undefined) {
      throw new CalcError("Incomplete expression");
    }
    if (token.kind === "number") {
      return token.value;
    }
    if (token.kind === "(") {
      const value = expression();
      const close = tokens[position];
      position += 1;
      if (close === undefined || close.kind !== ")") {
        throw new CalcError("Missing closing parenthesis");
      }
      return value;
    }
    throw new CalcError("Unexpected " + token.value);
  }

  const value = expression();
  if (position < tokens.length) {
    throw new CalcError("Unexpected " + tokens[position].value);
  }
  return value;
}

function roundResult(value) {
  if (!Number.isFinite(value)) {
    throw new CalcError("Result out of range");
  }
  // Rounding hides binary floating-point noise: 0.1 + 0.2 shows as 0.3.
  const rounded = Number(value.toPrecision(SIGNIFICANT_DIGITS));
  return rounded === 0 ? 0 : rounded; // no "-0"
}

// Pure: the value of an arithmetic expression, or an error, and what the display shows.
function evaluate(expression) {
  try {
    if (typeof expression !== "string" || expression.trim() === "") {
      throw new CalcError("Empty expression");
    }
    if (expression.length > MAX_EXPRESSION_LENGTH) {
      throw new CalcError("Expression too long");
    }
    const value = roundResult(parse(tokenize(expression)));
    return { ok: true, value: value, display: String(value), error: null };
  } catch (error) {
    const message = error instanceof CalcError ? error.message : "Invalid expression";
    return { ok: false, value: null, display: ERROR_DISPLAY, error: message };
  }
}

// Pure: what a key press means, or null when the calculator ignores it.
function keyToCommand(key) {
  if (key.length === 1 && ((key >= "0" && key <= "9") || "+-*/().".includes(key))) {
    return { action: "input", symbol: key };
  }
  if (key === "x" || key === "X") {
    return { action: "input", symbol: "*" };
  }
  if (key === "Enter" || key === "=") {
    return { action: "equals" };
  }
  if (key === "Escape" || key === "Delete" || key === "c" || key === "C") {
    return { action: "clear" };
  }
  if (key === "Backspace") {
    return { action: "backspace" };
  }
  return null;
}

function prettify(expression) {
  return expression
    .split("*").join("\u00d7")
    .split("/").join("\u00f7")
    .split("-").join("\u2212");
}

function createCalculator(display) {
  let expression = "";
  let showingResult = false;

  function show(text) {
    display.textContent = text;
  }

  function input(symbol) {
    if (showingResult) {
      // An operator goes on from the result; anything else starts a new expression.
      if (!OPERATORS.has(symbol)) {
        expression = "";
      }
      showingResult = false;
    }
    if (expression.length >= MAX_INPUT_LENGTH) {
      return;
    }
    expression += symbol;
    show(prettify(expression));
  }

  function equals() {
    if (expression === "") {
      return;
    }
    const result = evaluate(expression);
    show(result.ok ? prettify(result.display) : result.display);
    // An error, or a result in exponent notation, cannot be typed on.
    expression = result.ok && !result.display.includes("e") ? result.display : "";
    showingResult = true;
  }

  function clear() {
    expression = "";
    showingResult = false;
    show("0");
  }

  function backspace() {
    if (showingResult) {
      clear();
      return;
    }
    expression = expression.slice(0, -1);
    show(expression === "" ? "0" : prettify(expression));
  }

  function run(command) {
    if (command.action === "input") {
      input(command.symbol);
    } else if (command.action === "equals") {
      equals();
    } else if (command.action === "clear") {
      clear();
    } else if (command.action === "backspace") {
      backspace();
    }
  }

  return { run: run };
}

function start() {
  const display = document.getElementById("display");
  const keys = document.getElementById("keys");
  const calculator = createCalculator(display);

  keys.addEventListener("click", function (event) {
    const button = event.target.closest("button");
    if (button === null) {
      return;
    }
    if (button.dataset.input !== undefined) {
      calculator.run({ action: "input", symbol: button.dataset.input });
    } else {
      calculator.run({ action: button.dataset.action });
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const command = keyToCommand(event.key);
    if (command !== null) {
      event.preventDefault();
      calculator.run(command);
    }
  });
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { evaluate, tokenize, keyToCommand };
}
