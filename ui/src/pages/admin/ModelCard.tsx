import { useEffect, useState, type ReactNode } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import type { CardLink, ModelCardData } from "../../lib/types";
import { Badge, ErrorBanner, Spinner } from "../../components/ui/misc";

/** A number to 3 significant figures ("—" for none); strings that are not numbers as they are. */
export function sig3(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === "") return "—";
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (n === 0) return "0";
  const abs = Math.abs(n);
  if (abs >= 1e6 || abs < 1e-4) return n.toExponential(2);
  return String(Number(n.toPrecision(3)));
}

interface Interval {
  value: number | null;
  low: number | null;
  high: number | null;
  n: number;
}

/** "85.7 % [75.7, 92.1]" for a rate, "812 [790, 834]" for a mean. */
export function formatInterval(entry: Interval | undefined, percent: boolean): string {
  if (!entry || entry.value === null) return "—";
  const scale = percent ? 100 : 1;
  const text = `${sig3(entry.value * scale)}${percent ? " %" : ""}`;
  if (entry.low === null || entry.high === null) return text;
  return `${text} [${sig3(entry.low * scale)}, ${sig3(entry.high * scale)}]`;
}

/** An interval as two pieces that may wrap apart on a narrow screen. */
function IntervalCell({ entry, percent }: { entry: Interval | undefined; percent: boolean }) {
  const text = formatInterval(entry, percent);
  const at = text.indexOf(" [");
  if (at < 0) return <>{text}</>;
  return (
    <>
      <span className="block whitespace-nowrap">{text.slice(0, at)}</span>{" "}
      <span className="block whitespace-nowrap text-muted-foreground">{text.slice(at + 1)}</span>
    </>
  );
}

const VERDICT_STYLE: Record<string, string> = {
  promote: "border-emerald-600 bg-emerald-600/10 text-emerald-700 dark:text-emerald-400",
  "keep testing": "border-amber-500 bg-amber-500/10 text-amber-700 dark:text-amber-400",
  "roll back": "border-destructive bg-destructive/10 text-destructive",
};

export function VerdictBadge({ verdict }: { verdict: string }) {
  return (
    <Badge data-testid="verdict" className={VERDICT_STYLE[verdict] ?? ""}>
      {verdict}
    </Badge>
  );
}

function Link({ link }: { link: CardLink | null | undefined }) {
  if (!link) return <span className="text-muted-foreground">—</span>;
  if (!link.url) return <span className="font-mono text-xs">{link.label}</span>;
  return (
    <a href={link.url} target="_blank" rel="noreferrer" className="font-mono text-xs break-all text-primary underline-offset-2 hover:underline">
      {link.label}
    </a>
  );
}

function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section className="space-y-1">
      <h4 className="text-xs font-semibold tracking-wide text-muted-foreground uppercase">{title}</h4>
      {children}
    </section>
  );
}

const REVIEW_ROWS: [string, string, boolean][] = [
  ["thumbs_up_rate", "Thumbs up (of rated)", true],
  ["regeneration_rate", "Regenerated", true],
  ["abandonment_rate", "Stopped", true],
  ["error_rate", "Errors", true],
  ["latency_ms", "Latency, ms", false],
  ["credits_per_answer", "Credits per answer", false],
];

type Review = {
  verdict: string;
  reason: string;
  test: string;
  alpha: number;
  reviewed_at?: string;
  sides: Record<"champion" | "challenger", Record<string, Interval> & { answers: number; rated: number }>;
};

export function ReviewTable({ review }: { review: Review }) {
  return (
    <div className="space-y-2" data-testid="ab-review">
      <p className="text-sm">
        <VerdictBadge verdict={review.verdict} /> <span className="text-muted-foreground">{review.reason}</span>
      </p>
      <table className="w-full table-fixed text-sm">
        <thead className="text-left text-xs text-muted-foreground">
          <tr>
            <th className="py-1 pr-2 font-medium">Champion</th>
            <th className="py-1 font-medium">Challenger</th>
          </tr>
        </thead>
        {REVIEW_ROWS.map(([key, label, percent]) => (
          <tbody key={key} className="border-t border-border">
            <tr>
              <th colSpan={2} scope="colgroup" className="pt-1 text-left text-xs font-medium">
                {label}
              </th>
            </tr>
            <tr data-testid="ab-row" data-metric={key} className="align-top">
              <td className="pr-2 pb-1 font-mono text-xs">
                <IntervalCell entry={review.sides.champion[key]} percent={percent} />
              </td>
              <td className="pb-1 font-mono text-xs">
                <IntervalCell entry={review.sides.challenger[key]} percent={percent} />
              </td>
            </tr>
          </tbody>
        ))}
        <tbody className="border-t border-border">
          <tr>
            <th colSpan={2} scope="colgroup" className="pt-1 text-left text-xs font-medium">
              Answers (rated)
            </th>
          </tr>
          <tr>
            <td className="pr-2 pb-1 font-mono text-xs">
              {review.sides.champion.answers} ({review.sides.champion.rated})
            </td>
            <td className="pb-1 font-mono text-xs">
              {review.sides.challenger.answers} ({review.sides.challenger.rated})
            </td>
          </tr>
        </tbody>
      </table>
      <p className="text-xs text-muted-foreground">
        95 % intervals: Wilson for rates, normal for means. Test: {review.test}, α = {review.alpha}.
      </p>
    </div>
  );
}

/** A version's generated model card (GET /admin/models/{version}/card). */
export function ModelCard({ version }: { version: string }) {
  const [card, setCard] = useState<ModelCardData | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    unwrap(client.GET("/api/v1/admin/models/{version}/card", { params: { path: { version } } }))
      .then(setCard)
      .catch((e) => setError(describeError(e)));
  }, [version]);

  if (error) return <ErrorBanner message={error} />;
  if (!card) return <Spinner label="Loading the model card" />;
  return (
    <div className="space-y-3 text-sm" data-testid="model-card">
      <dl className="grid grid-cols-[auto_1fr] gap-x-3 gap-y-1">
        <dt className="text-muted-foreground">Made by</dt>
        <dd>{card.model_step ?? "—"}</dd>
        <dt className="text-muted-foreground">Tokenizer</dt>
        <dd className="font-mono text-xs break-all">{card.tokenizer ?? "—"}</dd>
      </dl>
      <Section title="Training data">
        {Object.keys(card.data).length ? (
          <ul className="list-disc pl-5" data-testid="card-data">
            {Object.entries(card.data).map(([step, counts]) => (
              <li key={step}>
                <span className="font-medium">{step}</span>: {counts}
              </li>
            ))}
          </ul>
        ) : (
          <p className="text-muted-foreground">Not recorded.</p>
        )}
      </Section>
      <Section title="Runs">
        <ul className="space-y-1" data-testid="card-runs">
          {card.runs.map((run) => (
            <li key={run.step} className="flex flex-wrap items-baseline gap-x-3 gap-y-0.5" data-testid="card-run" data-step={run.step}>
              <span className="font-medium">{run.step}</span>
              {run.manifest && <span className="font-mono text-xs text-muted-foreground">{run.manifest}</span>}
              <Link link={run.mlflow} />
              <Link link={run.airflow} />
            </li>
          ))}
        </ul>
      </Section>
      <Section title="Decontamination">
        {Object.keys(card.decontamination).length ? (
          <ul className="list-disc pl-5">
            {Object.entries(card.decontamination).map(([name, counts]) => (
              <li key={name}>
                {name}: {counts}
              </li>
            ))}
          </ul>
        ) : (
          <p className="text-muted-foreground">Not recorded.</p>
        )}
      </Section>
      <Section title="Feedback datasets">
        {card.feedback_datasets.length ? (
          <ul className="list-disc pl-5" data-testid="card-feedback">
            {card.feedback_datasets.map((name) => (
              <li key={name}>{name}</li>
            ))}
          </ul>
        ) : (
          <p className="text-muted-foreground">None.</p>
        )}
      </Section>
      <Section title="A/B review">
        {card.review ? <ReviewTable review={card.review as unknown as Review} /> : <p className="text-muted-foreground">No review yet.</p>}
      </Section>
      <p className="text-xs text-muted-foreground" data-testid="card-artifact">
        {card.artifact ? (
          <>
            MLflow artifact: <span className="font-mono break-all">{card.artifact}</span>
          </>
        ) : (
          "Not logged to MLflow yet (the orchard_ab_review DAG logs it)."
        )}
      </p>
    </div>
  );
}
