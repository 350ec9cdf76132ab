"""Views of polls: list the questions, show one, vote, show the results."""
from __future__ import annotations

from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .models import Choice, Question


def index(request: HttpRequest) -> HttpResponse:
    """The latest questions, newest first."""
    questions = Question.objects.order_by("-pub_date")[:5]
    return render(request, "polls/index.html", {"latest_question_list": questions})


def detail(request: HttpRequest, question_id: int) -> HttpResponse:
    """The voting form of one question."""
    question = get_object_or_404(Question, pk=question_id)
    return render(request, "polls/detail.html", {"question": question})


def results(request: HttpRequest, question_id: int) -> HttpResponse:
    """The votes of each choice of one question."""
    question = get_object_or_404(Question, pk=question_id)
    return render(request, "polls/results.html", {"question": question})


@require_POST
def vote(request: HttpRequest, question_id: int) -> HttpResponse:
    """Count one vote for the chosen choice, then redirect to the results."""
    question = get_object_or_404(Question, pk=question_id)
    try:
        selected = question.choice_set.get(pk=request.POST["choice"])
    except (KeyError, ValueError, Choice.DoesNotExist):
        return render(
            request, "polls/detail.html",
            {"question": question, "error_message": "You didn't select a choice."},
            status=400,
        )
    selected.votes = F("votes") + 1  # counted in the database, not in Python
    selected.save(update_fields=["votes"])
    return HttpResponseRedirect(reverse("polls:results", args=(question.id,)))
