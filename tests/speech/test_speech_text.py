"""What is spoken of a reply, and how a streamed reply is cut into sentences."""

from roleplay.speech.text import SentenceSplitter, spoken_text


def _feed_all(splitter: SentenceSplitter, deltas: list[str]) -> list[str]:
    pieces = [piece for delta in deltas for piece in splitter.feed(delta)]
    return pieces + splitter.flush()


def test_stage_directions_are_not_spoken() -> None:
    assert spoken_text("*손을 흔들며* 안녕! (웃으며) 오늘 어땠어? （눈을 깜빡인다）") == "안녕! 오늘 어땠어?"
    assert spoken_text("*waves* Hi there. [softly] Good to see you.") == "Hi there. Good to see you."


def test_stage_directions_can_be_kept_when_configured() -> None:
    assert spoken_text("*waves* Hi.", strip_directions=False) == "*waves* Hi."


def test_sentences_come_out_as_soon_as_they_end() -> None:
    splitter = SentenceSplitter(first_piece_early=False)
    assert splitter.feed("안녕") == []
    assert splitter.feed("하세요! 오늘") == ["안녕하세요!"]
    assert splitter.feed(" 날씨가 좋네요") == []
    assert splitter.feed(". 산") == ["오늘 날씨가 좋네요."]
    assert splitter.flush() == ["산"]


def test_a_punctuation_run_stays_with_its_sentence() -> None:
    assert _feed_all(SentenceSplitter(), ["정말?", "!", " 믿을 수 없어..."]) == [
        "정말?!", "믿을 수 없어..."]


def test_the_first_piece_may_end_at_a_comma_for_a_quick_first_sound() -> None:
    pieces = _feed_all(SentenceSplitter(),
                       ["음, 그러니까 말이야, 어제 카페에서 ", "민지를 만났어. 반가웠어."])
    assert pieces[0] == "음, 그러니까 말이야,"
    assert pieces[1:] == ["어제 카페에서 민지를 만났어.", "반가웠어."]


def test_a_sentence_never_ends_inside_a_stage_direction() -> None:
    pieces = _feed_all(SentenceSplitter(), ["*한숨을 쉰다. 그리고 ", "웃는다.* 괜찮아. 걱정 마."])
    assert pieces == ["괜찮아.", "걱정 마."]


def test_numbers_with_a_point_are_not_sentence_ends() -> None:
    assert _feed_all(SentenceSplitter(first_piece_early=False),
                     ["버전 3.5가 나왔어. 좋지?"]) == ["버전 3.5가 나왔어.", "좋지?"]


def test_pieces_with_nothing_to_say_are_skipped() -> None:
    assert _feed_all(SentenceSplitter(), ["*끄덕* ", "... ", "좋아!"]) == ["좋아!"]


def test_streamed_speech_starts_at_a_word_boundary_before_the_first_sentence_ends() -> None:
    splitter = SentenceSplitter(first_piece_at_word=True)
    assert splitter.feed("*창밖을 보며* 오늘 ") == []  # stage directions do not count
    assert splitter.feed("비가 ") == []
    assert splitter.feed("많이 ") == ["오늘 비가 많이"]
    assert splitter.feed("오네. 우산은 ") == ["오네."]
    assert splitter.feed("챙겨 왔어? 나는 ") == ["우산은 챙겨 왔어?"]  # later pieces are sentences


def test_the_word_cut_waits_when_the_sentence_is_already_ending() -> None:
    splitter = SentenceSplitter(first_piece_at_word=True)
    assert splitter.feed("오늘 비가 많이 오네.") == []
    assert splitter.feed(" 우산") == ["오늘 비가 많이 오네."]


def test_whole_sentences_without_streaming_keep_their_prosody() -> None:
    assert _feed_all(SentenceSplitter(), ["오늘 비가 ", "많이 ", "오네. 우산은?"]) == [
        "오늘 비가 많이 오네.", "우산은?"]
